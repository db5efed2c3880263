//! Compiles `loupe/v1/*.proto` with a pure-Rust protobuf compiler, so a fresh clone builds with
//! cargo alone (no system `protoc`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["loupe/v1/snapshot.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["."])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
