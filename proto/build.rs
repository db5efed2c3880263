//! Compiles `loupe/v1/*.proto` (messages and gRPC services) with a pure-Rust protobuf compiler,
//! so a fresh clone builds with cargo alone (no system `protoc`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "loupe/v1/snapshot.proto",
        "loupe/v1/agent.proto",
        "loupe/v1/control_plane.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["."])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .build_transport(false)
        .compile_fds(descriptors)?;
    Ok(())
}
