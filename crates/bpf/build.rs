//! Builds the BPF program into a libbpf-rs skeleton when the `bpf` feature is on and clang is
//! installed; otherwise tidal is built without it (and says so at run time).

fn main() {
    println!("cargo:rerun-if-changed=src/bpf/runq.bpf.c");
    println!("cargo:rerun-if-changed=src/bpf/vmlinux.h");
    // Another clang (or none: CI checks the build without the program) is another build.
    println!("cargo:rerun-if-env-changed=CLANG");
    #[cfg(feature = "bpf")]
    build();
}

#[cfg(feature = "bpf")]
fn build() {
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".into());
    if std::process::Command::new(&clang)
        .arg("--version")
        .output()
        .is_err()
    {
        println!(
            "cargo:warning=tidal is built without its BPF program: `{clang}` was not found (apt-get install clang libelf-dev)"
        );
        return;
    }
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default())
        .join("runq.skel.rs");
    // The skeleton is not formatted: a rustup proxy for a toolchain without the rustfmt component
    // (`--profile minimal`) fails, and libbpf-cargo then fails the whole build. A path that does
    // not exist makes it skip formatting.
    let no_rustfmt = out.with_file_name("no-rustfmt");
    let r = libbpf_cargo::SkeletonBuilder::new()
        .source("src/bpf/runq.bpf.c")
        .rustfmt(&no_rustfmt)
        .clang(&clang)
        .clang_args(["-Isrc/bpf", "-D__TARGET_ARCH_x86", "-O2", "-g"])
        .build_and_generate(&out);
    match r {
        Ok(()) => println!("cargo:rustc-cfg=tidal_bpf"),
        Err(e) => println!(
            "cargo:warning=tidal is built without its BPF program: clang failed on src/bpf/runq.bpf.c: {e}"
        ),
    }
}
