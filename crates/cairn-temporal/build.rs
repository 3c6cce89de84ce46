//! Generates the server side of Temporal's `WorkflowService` from the descriptor set that
//! `temporalio-protos` exports (its `links` key hands us the path): message types are that
//! crate's, only the service trait and router are generated here. RPCs Cairn does not serve
//! fall to generated default bodies answering `UNIMPLEMENTED`.

use prost::Message;

const SERVICE_FILE: &str = "temporal/api/workflowservice/v1/service.proto";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::var("DEP_TEMPORALIO_PROTOS_DESCRIPTOR_PATH")
        .map_err(|_| "temporalio-protos did not export its descriptor path")?;
    println!("cargo:rerun-if-changed={path}");
    let bytes = std::fs::read(&path)?;
    let mut set = prost_types::FileDescriptorSet::decode(bytes.as_slice())?;
    set.file.retain(|f| f.name() == SERVICE_FILE);
    if set.file.len() != 1 {
        return Err(format!("{SERVICE_FILE} is not in {path}").into());
    }
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .generate_default_stubs(true)
        .extern_path(".temporal.api", "::temporalio_protos::temporal::api")
        .compile_fds(set)?;
    name_unimplemented_rpcs()?;
    Ok(())
}

/// Makes each default body's `UNIMPLEMENTED` name its RPC (tonic's says only "Not yet
/// implemented"), so a client learns which call Cairn does not serve.
fn name_unimplemented_rpcs() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let path = out.join("temporal.api.workflowservice.v1.rs");
    let text = std::fs::read_to_string(&path)?;
    let stub = "Err(tonic::Status::unimplemented(\"Not yet implemented\"))";
    let mut rpc = String::new();
    let mut named = String::with_capacity(text.len());
    let mut stubs = 0;
    for line in text.lines() {
        if let Some(rest) = line.trim_start().strip_prefix("async fn ") {
            rpc = rest.split('(').next().unwrap_or_default().to_string();
        }
        if line.trim() == stub {
            let pascal: String = rpc
                .split('_')
                .map(|w| {
                    let mut c = w.chars();
                    c.next()
                        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                        .unwrap_or_default()
                })
                .collect();
            named.push_str(&line.replace(
                "\"Not yet implemented\"",
                &format!("\"Cairn does not serve WorkflowService/{pascal} yet\""),
            ));
            stubs += 1;
        } else {
            named.push_str(line);
        }
        named.push('\n');
    }
    if stubs == 0 {
        return Err("no default RPC bodies found to name (tonic's output changed?)".into());
    }
    std::fs::write(&path, named)?;
    Ok(())
}
