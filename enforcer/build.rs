//! Builds the kernel programs (enforcer-ebpf, nightly, bpfel-unknown-none) and leaves the object
//! in OUT_DIR for `include_bytes_aligned!`.
fn main() -> anyhow::Result<()> {
    // The store's migrations are embedded by `sqlx::migrate!`.
    println!("cargo:rerun-if-changed=migrations");
    let package = aya_build::Package {
        name: "enforcer-ebpf",
        root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../enforcer-ebpf"),
        ..Default::default()
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::default())
}
