//! Compiles `proto/` with protox (a protobuf compiler in Rust), so building sluice
//! never needs a system `protoc`. The descriptor set is kept for gRPC reflection.

use std::path::PathBuf;

use prost::Message;

const PROTOS: &[&str] = &[
    "sluice/dispatcher/v1/dispatcher.proto",
    "sluice/cluster/v1/cluster.proto",
    "sluice/md/v1/md.proto",
    "sluice/account/v1/account.proto",
    "sluice/signal/v1/signal.proto",
    "sluice/execution/v1/execution.proto",
    "sluice/ops/v1/ops.proto",
    "sluice/alert/v1/alert.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    println!("cargo:rerun-if-changed={}", root.display());
    let files: Vec<PathBuf> = PROTOS.iter().map(|p| root.join(p)).collect();
    let fds = protox::compile(&files, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("sluice_descriptor.bin"), fds.encode_to_vec())?;
    // Our codec: a request that cannot be decoded is INVALID_ARGUMENT (see src/codec.rs).
    tonic_prost_build::configure().build_client(true).build_server(true).codec_path("crate::codec::StrictCodec").compile_fds(fds)?;
    Ok(())
}
