//! Writes the kubelet device-plugin API's Rust code from the vendored `api.proto`.
//! Usage: `baton-device-plugin-codegen PROTO_DIR OUT_DIR` (see `../regen.sh`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, proto_dir, out_dir] = args.as_slice() else {
        return Err("usage: baton-device-plugin-codegen PROTO_DIR OUT_DIR".into());
    };
    // A pinned protoc from the crate rather than whatever the machine has, so the output
    // depends only on Cargo.lock.
    std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .build_transport(false)
        .out_dir(out_dir)
        .compile_protos(&[format!("{proto_dir}/api.proto")], &[proto_dir.clone()])?;
    Ok(())
}
