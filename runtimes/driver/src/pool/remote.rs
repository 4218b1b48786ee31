//! The pool's exchanges with one server outside a prompt: uploads before an attempt, and the
//! lookups that decide whether an uncertain attempt ran.

use std::collections::HashMap;

use comfy_proxy::pool::Lookup;
use comfy_proxy::session::Image;
use comfy_proxy::wire::ImageFormat;
use comfy_proxy::wire::http;
use comfy_proxy::wire::message::FileRef;
use comfy_proxy::{NodeId, PromptId, Workflow};

use super::Upload;
use crate::client::{Client, ClientError};

/// Uploads every file to `client`'s server and points the inputs at the names it returned.
pub(super) async fn upload_all(
    client: &Client,
    workflow: &mut Workflow,
    uploads: &[Upload],
) -> Result<(), ClientError> {
    for upload in uploads {
        let stored = client
            .upload_image(&upload.file_name, &upload.bytes)
            .await?;
        workflow
            .set(
                &upload.input,
                serde_json::Value::String(stored.input_value()),
            )
            .map_err(ClientError::Workflow)?;
    }
    Ok(())
}

/// Asks the server what became of a prompt; the verdicts are the core's ([`Lookup::from_history`],
/// [`Lookup::from_queue`]). A success comes with its file outputs, fetched.
pub(super) async fn lookup(
    client: &Client,
    prompt: &PromptId,
    workflow: &Workflow,
) -> (Lookup, Vec<(NodeId, u32, Image)>) {
    let entry = match client
        .request(http::history(prompt))
        .await
        .map(|r| http::decode_history(&r, prompt))
    {
        Ok(Ok(entry)) => entry,
        _ => return (Lookup::Unreachable, Vec::new()),
    };
    if let Some(entry) = entry {
        let verdict = Lookup::from_history(&entry, workflow);
        if verdict != (Lookup::Finished { ok: true }) {
            return (verdict, Vec::new());
        }
        let mut outputs = Vec::new();
        let mut index: HashMap<NodeId, u32> = HashMap::new();
        for (node, file) in entry.files() {
            match fetch(client, &file).await {
                Some(image) => {
                    let i = index.entry(node.clone()).or_insert(0);
                    outputs.push((node, *i, image));
                    *i += 1;
                }
                None => return (Lookup::Finished { ok: false }, Vec::new()),
            }
        }
        return (Lookup::Finished { ok: true }, outputs);
    }
    match client
        .request(http::queue())
        .await
        .map(|r| http::decode_queue(&r))
    {
        Ok(Ok(queue)) => (Lookup::from_queue(&queue, prompt), Vec::new()),
        _ => (Lookup::Unreachable, Vec::new()),
    }
}

async fn fetch(client: &Client, file: &FileRef) -> Option<Image> {
    let response = client.request(http::view(file)).await.ok()?;
    let data = http::decode_view(&response).ok()?;
    let format =
        ImageFormat::sniff(&data).or_else(|| ImageFormat::from_file_name(&file.filename))?;
    Some(Image { format, data })
}
