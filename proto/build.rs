//! Compiles `loupe/v1/*.proto` (messages and gRPC services) with a pure-Rust protobuf compiler,
//! so a fresh clone builds with cargo alone (no system `protoc`). The client stubs and server
//! traits are generated only for the crate's `client` and `server` features.

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
    let feature = |name: &str| std::env::var_os(format!("CARGO_FEATURE_{name}")).is_some();
    tonic_prost_build::configure()
        .build_server(feature("SERVER"))
        .build_client(feature("CLIENT"))
        .build_transport(false)
        .compile_fds(descriptors)?;
    Ok(())
}
