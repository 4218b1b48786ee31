//! Server operations on a [`Client`]: the queue, the history, interrupts, memory, models,
//! `object_info`, system stats, uploads and downloads.
//!
//! Each is one HTTP exchange built and decoded by the core (`comfy_proxy::wire::http`), sent
//! outside any prompt, with the client's auth and headers, and bounded by the client's
//! [`http_timeout`](crate::ClientConfig::http_timeout). They act on the whole server: the queue
//! and the history hold every client's prompts, and an interrupt without a prompt id stops
//! whatever runs.

use bytes::Bytes;
use comfy_proxy::wire::http::{
    self, HistoryEntry, QueuePosition, QueueState, SystemStats, UploadedFile,
};
use comfy_proxy::wire::{FileRef, HttpRequest, HttpResponse};
use comfy_proxy::{PromptId, ProtocolError};

use serde_json::Value;

use crate::client::{Client, ClientError};

/// Where and how [`Client::upload`] stores a file.
///
/// The default stores an image in the server's `input` folder, renamed if the name is taken.
///
/// ```
/// use comfy_proxy_driver::UploadOptions;
/// let opts = UploadOptions::new().subfolder("masks").overwrite(true);
/// assert_eq!(opts.kind, "input");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct UploadOptions {
    /// The subfolder of the target folder (created when missing).
    pub subfolder: Option<String>,
    /// The target folder: `input` (default), `temp` or `output`.
    pub kind: String,
    /// Replace a file of the same name instead of storing under a new name.
    pub overwrite: bool,
    /// Upload a mask for this image (`POST /upload/mask`): the server puts the upload's alpha
    /// channel on that image and stores the result under the upload's name.
    pub mask_of: Option<FileRef>,
}

impl Default for UploadOptions {
    fn default() -> Self {
        Self {
            subfolder: None,
            kind: "input".to_owned(),
            overwrite: false,
            mask_of: None,
        }
    }
}

impl UploadOptions {
    /// An image into `input`, renamed on a clash.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores into `subfolder` of the target folder.
    pub fn subfolder(mut self, subfolder: impl Into<String>) -> Self {
        self.subfolder = Some(subfolder.into());
        self
    }

    /// Stores into `kind` (`input`, `temp` or `output`) instead of `input`.
    pub fn kind(mut self, kind: impl Into<String>) -> Self {
        self.kind = kind.into();
        self
    }

    /// Replaces a file of the same name (`true`) or lets the server rename the upload.
    pub fn overwrite(mut self, overwrite: bool) -> Self {
        self.overwrite = overwrite;
        self
    }

    /// Sends the upload as a mask for `original`, an image the server holds.
    pub fn mask_of(mut self, original: FileRef) -> Self {
        self.mask_of = Some(original);
        self
    }
}

fn protocol(e: ProtocolError) -> ClientError {
    ClientError::Protocol(e)
}

impl Client {
    /// One exchange with the server, given up after the client's `http_timeout`.
    async fn exchange(&self, request: HttpRequest) -> Result<HttpResponse, ClientError> {
        self.send(request).await
    }

    /// The server's queue (`GET /queue`): running and pending prompts of every client.
    pub async fn queue(&self) -> Result<QueueState, ClientError> {
        let response = self.exchange(http::queue()).await?;
        http::decode_queue(&response).map_err(protocol)
    }

    /// Where `prompt` is in the server's queue: running, pending with a count of prompts ahead,
    /// or `None` when it is in neither list (finished, deleted or never queued: see
    /// [`Client::history`]).
    pub async fn queue_position(
        &self,
        prompt: &PromptId,
    ) -> Result<Option<QueuePosition>, ClientError> {
        Ok(self.queue().await?.contains(prompt))
    }

    /// Stops the running prompt (`POST /interrupt`). With `Some(id)` the server stops it only
    /// if `id` is the prompt running, so a prompt of someone else is never hit by a race; with
    /// `None` it stops whatever runs. Pending prompts stay queued: see
    /// [`Client::delete_from_queue`].
    pub async fn interrupt(&self, prompt: Option<&PromptId>) -> Result<(), ClientError> {
        let response = self.exchange(http::interrupt(prompt)).await?;
        http::decode_interrupt(&response).map_err(protocol)
    }

    /// Removes pending prompts from the queue (`POST /queue` `delete`). Ids that are not
    /// pending are ignored by the server; a running prompt needs [`Client::interrupt`].
    pub async fn delete_from_queue(&self, prompts: &[PromptId]) -> Result<(), ClientError> {
        let response = self.exchange(http::queue_delete(prompts)).await?;
        http::decode_queue_edit(&response).map_err(protocol)
    }

    /// Removes every pending prompt of every client (`POST /queue` `clear`).
    pub async fn clear_queue(&self) -> Result<(), ClientError> {
        let response = self.exchange(http::queue_clear()).await?;
        http::decode_queue_edit(&response).map_err(protocol)
    }

    /// The history entry of `prompt` (`GET /history/{id}`): `None` until it has finished, and
    /// for ids the server does not know.
    pub async fn history(&self, prompt: &PromptId) -> Result<Option<HistoryEntry>, ClientError> {
        let response = self.exchange(http::history(prompt)).await?;
        http::decode_history(&response, prompt).map_err(protocol)
    }

    /// The last `max_items` finished prompts (`GET /history?max_items=`), oldest first.
    pub async fn recent_history(&self, max_items: u32) -> Result<Vec<HistoryEntry>, ClientError> {
        let response = self.exchange(http::history_recent(max_items)).await?;
        http::decode_history_all(&response).map_err(protocol)
    }

    /// Forgets finished prompts (`POST /history` `delete`); their files stay on the server.
    pub async fn delete_history(&self, prompts: &[PromptId]) -> Result<(), ClientError> {
        let response = self.exchange(http::history_delete(prompts)).await?;
        http::decode_history_edit(&response).map_err(protocol)
    }

    /// Forgets every finished prompt of every client (`POST /history` `clear`).
    pub async fn clear_history(&self) -> Result<(), ClientError> {
        let response = self.exchange(http::history_clear()).await?;
        http::decode_history_edit(&response).map_err(protocol)
    }

    /// Asks the server to unload its models and/or free cached memory (`POST /free`). The
    /// server does it between prompts, not at once.
    pub async fn free(&self, unload_models: bool, free_memory: bool) -> Result<(), ClientError> {
        let response = self
            .exchange(http::free(unload_models, free_memory))
            .await?;
        http::decode_free(&response).map_err(protocol)
    }

    /// The model folder names (`GET /models`), or with `Some(folder)` the files in that
    /// folder (`GET /models/{folder}`, such as `loras`). An unknown folder is a
    /// [`ClientError::Protocol`] with status 404.
    pub async fn models(&self, folder: Option<&str>) -> Result<Vec<String>, ClientError> {
        let response = self.exchange(http::models(folder)).await?;
        http::decode_models(&response).map_err(protocol)
    }

    /// Every node class's description (`GET /object_info`), or one class's
    /// (`GET /object_info/{class}`; an empty object when the server does not know it).
    pub async fn object_info(&self, class: Option<&str>) -> Result<Value, ClientError> {
        let response = self.exchange(http::object_info(class)).await?;
        http::decode_object_info(&response).map_err(protocol)
    }

    /// Versions, RAM and devices (`GET /system_stats`).
    pub async fn system_stats(&self) -> Result<SystemStats, ClientError> {
        let response = self.exchange(http::system_stats()).await?;
        http::decode_system_stats(&response).map_err(protocol)
    }

    /// Uploads `bytes` as `file_name` (`POST /upload/image`, or `/upload/mask` with
    /// [`UploadOptions::mask_of`]). Use the returned name: unless `overwrite`, the server
    /// renames a file whose name is taken. A file name with quotes, backslashes or control
    /// characters is refused before anything is sent ([`ClientError::Upload`]).
    pub async fn upload(
        &self,
        file_name: &str,
        bytes: &[u8],
        options: &UploadOptions,
    ) -> Result<UploadedFile, ClientError> {
        let boundary = format!("comfy-proxy-{:032x}", fastrand::u128(..));
        let subfolder = options.subfolder.as_deref();
        let request = match &options.mask_of {
            Some(original) => http::upload_mask(
                file_name,
                bytes,
                original,
                subfolder,
                &options.kind,
                options.overwrite,
                &boundary,
            ),
            None => http::upload_image(
                file_name,
                bytes,
                subfolder,
                &options.kind,
                options.overwrite,
                &boundary,
            ),
        }
        .map_err(ClientError::Upload)?;
        let response = self.exchange(request).await?;
        http::decode_upload(&response).map_err(protocol)
    }

    /// Downloads a file the server holds (`GET /view`): an output, an upload, a temp file.
    /// Bodies over the client's `max_body` are refused.
    pub async fn view(&self, file: &FileRef) -> Result<Bytes, ClientError> {
        let response = self.exchange(http::view(file)).await?;
        http::decode_view(&response).map_err(protocol)
    }
}
