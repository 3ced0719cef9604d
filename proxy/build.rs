//! Locates the protobuf descriptor set that `envoy-types` ships (every Envoy v3 message) so that the
//! bootstrap parser can transcode the canonical proto3 JSON mapping into the generated types.
//!
//! The set is embedded without its `source_code_info` (comments and source spans): the transcoder
//! never reads them, and decoded they were most of the proxy's resident memory.

use std::path::{Path, PathBuf};
use std::process::Command;

use prost::Message;
use prost_types::FileDescriptorSet;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let path =
        locate().unwrap_or_else(|e| panic!("cannot locate envoy-types' descriptor set: {e}"));
    println!("cargo:rerun-if-changed={}", path.display());
    let stripped = strip(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    println!(
        "cargo:rustc-env=REMORA_ENVOY_DESCRIPTORS={}",
        stripped.display()
    );
}

/// Writes the descriptor set at `path` without source code info into `OUT_DIR`.
fn strip(path: &Path) -> Result<PathBuf, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let mut set = FileDescriptorSet::decode(bytes.as_slice()).map_err(|e| e.to_string())?;
    for file in &mut set.file {
        file.source_code_info = None;
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").map_err(|e| e.to_string())?)
        .join("envoy-descriptors.bin");
    std::fs::write(&out, set.encode_to_vec()).map_err(|e| e.to_string())?;
    Ok(out)
}

fn locate() -> Result<PathBuf, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = std::env::var("CARGO_MANIFEST_DIR").map_err(|e| e.to_string())?;
    let target = std::env::var("TARGET").map_err(|e| e.to_string())?;
    // Only the target platform's packages: they are all downloaded already, so this works offline.
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--offline",
            "--filter-platform",
            &target,
        ])
        .arg("--manifest-path")
        .arg(Path::new(&manifest).join("Cargo.toml"))
        .output()
        .map_err(|e| format!("running cargo metadata: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let meta: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("cargo metadata output: {e}"))?;
    let packages = meta["packages"]
        .as_array()
        .ok_or("no packages in cargo metadata")?;
    for p in packages {
        if p["name"] == "envoy-types" {
            let manifest = p["manifest_path"]
                .as_str()
                .ok_or("envoy-types without manifest_path")?;
            let dir = Path::new(manifest)
                .parent()
                .ok_or("envoy-types manifest has no parent")?;
            let bin = dir.join("src/generated/types.bin");
            if bin.exists() {
                return Ok(bin);
            }
            return Err(format!("{} does not exist", bin.display()));
        }
    }
    Err("envoy-types is not a dependency".into())
}
