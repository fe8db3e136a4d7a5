//! Generates the ttrpc messages and services of containerd's shim API from proto/ (pure Rust:
//! ttrpc-codegen parses the files itself, no protoc needed).

fn main() -> std::io::Result<()> {
    let protos = [
        "proto/containerd/types/mount.proto",
        "proto/containerd/types/task.proto",
        "proto/containerd/task/v2/shim.proto",
        "proto/containerd/events/events.proto",
        "proto/containerd/events/task_events.proto",
        "proto/containerd/runc/options.proto",
    ];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    println!("cargo:rerun-if-changed=build.rs");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").map_err(std::io::Error::other)?)
        .join("shim_proto");
    std::fs::create_dir_all(&out)?;
    ttrpc_codegen::Codegen::new()
        .out_dir(&out)
        .inputs(protos)
        .include("proto")
        .rust_protobuf()
        .customize(ttrpc_codegen::Customize {
            gen_mod: true,
            ..Default::default()
        })
        .rust_protobuf_customize(ttrpc_codegen::ProtobufCustomize::default().gen_mod_rs(true))
        .run()?;
    // The files are include!d into modules of src/runtime/shim/proto.rs, where inner
    // attributes are not allowed: that module carries the allows instead.
    for entry in std::fs::read_dir(&out)? {
        let path = entry?.path();
        let text = std::fs::read_to_string(&path)?;
        let kept: Vec<&str> = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("#![") && !l.trim_start().starts_with("//!"))
            .collect();
        std::fs::write(&path, kept.join("\n"))?;
    }
    Ok(())
}
