//! How a connector's upstream sessions are made, whatever its transport: the
//! credential of an HTTP or SSE connector, the process launcher of a stdio one, and
//! for `share_process` the one session every agent session (and the catalog) uses.
//! A recipe is built when a config is prepared and kept across reloads that leave
//! the connector's upstream as it was, so its process slots and shared process are
//! kept too.

use std::sync::Arc;

use serde_json::Value;

use crate::config::{Connector, Transport};
use crate::http_client::HttpClient;
use crate::upstream::{
    ChannelSession, CredentialProvider, HttpSession, Launcher, PipeSpec, SseTarget, UpstreamSession,
};
use crate::vault::Vault;

pub(crate) struct Recipe {
    credential: CredentialProvider,
    /// stdio connectors.
    launcher: Option<Arc<Launcher>>,
    /// `share_process = true`: made at the first use.
    shared: std::sync::OnceLock<Arc<UpstreamSession>>,
}

impl Recipe {
    pub(super) fn new(
        c: &Connector,
        credential: CredentialProvider,
        vault: Option<Arc<Vault>>,
    ) -> Self {
        let launcher = match &c.transport {
            Transport::Stdio(spec) => Some(Arc::new(Launcher::new(&c.id, spec.clone(), vault))),
            _ => None,
        };
        Recipe {
            credential,
            launcher,
            shared: std::sync::OnceLock::new(),
        }
    }

    /// An upstream session of connector `c` declaring client capabilities `declared`
    /// (for a shared process: the one session, declaring what relaying needs of nobody).
    pub(super) fn make(
        &self,
        client: &HttpClient,
        c: &Connector,
        declared: Value,
    ) -> Arc<UpstreamSession> {
        match &c.transport {
            Transport::StreamableHttp => Arc::new(UpstreamSession::Http(
                HttpSession::new(client.clone(), super::uri(c), self.credential.clone())
                    .declaring(declared)
                    .limiting(c.max_result_bytes),
            )),
            Transport::Sse => {
                let target = SseTarget {
                    client: client.clone(),
                    uri: super::uri(c),
                    credential: self.credential.clone(),
                };
                channel(PipeSpec::Sse(target), declared, c, false)
            }
            Transport::Stdio(spec) => {
                let launcher = self.launcher.clone().expect("stdio connectors have one");
                if !spec.share_process {
                    return channel(PipeSpec::Stdio(launcher), declared, c, false);
                }
                self.shared
                    .get_or_init(|| {
                        let none = super::relay::declared(Default::default(), None);
                        channel(PipeSpec::Stdio(launcher), none, c, true)
                    })
                    .clone()
            }
        }
    }

    /// Ends the shared process, if there is one (shutdown, connector removed or
    /// re-targeted).
    pub(super) async fn terminate(&self) {
        if let Some(shared) = self.shared.get() {
            shared.terminate().await;
        }
    }
}

fn channel(spec: PipeSpec, declared: Value, c: &Connector, shared: bool) -> Arc<UpstreamSession> {
    Arc::new(UpstreamSession::Channel(ChannelSession::new(
        spec,
        declared,
        c.max_result_bytes,
        shared,
    )))
}
