//! Builds the eBPF programs (gateway-ebpf, nightly, bpfel-unknown-none) so a
//! plain `cargo build` on stable produces a daemon with its object embedded.
//! aya-build reports nested build errors only as `cargo::warning` lines.

fn main() -> anyhow::Result<()> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../gateway-ebpf");
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "gateway-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
