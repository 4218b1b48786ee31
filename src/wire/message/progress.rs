//! `progress_state`'s nodes: kept as sent, decoded on demand.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::number;
use crate::error::ProtocolError;
use crate::ids::NodeId;

/// One node's entry in a `progress_state` message.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct NodeProgress {
    /// Progress so far.
    #[serde(deserialize_with = "number")]
    pub value: f64,
    /// The value at which the node is done.
    #[serde(deserialize_with = "number")]
    pub max: f64,
    /// `pending`, `running`, `finished` or `error`.
    pub state: String,
    /// The node's id.
    pub node_id: NodeId,
    /// The node shown in the UI.
    #[serde(default)]
    pub display_node_id: Option<NodeId>,
}

/// `progress_state.nodes` as the server sent it: an object of [`NodeProgress`] keyed by node
/// id. The server sends one with every node's change, each listing every node so far; a client
/// that follows prompts by their other messages never needs them, so they are decoded only when
/// asked ([`ProgressNodes::decode`]), not with the message. The object itself was checked to be
/// JSON when the message was decoded.
#[derive(Debug, Clone)]
pub struct ProgressNodes(pub(super) Box<RawValue>);

impl ProgressNodes {
    /// The nodes, in the server's order.
    ///
    /// ```
    /// use comfy_proxy::wire::ServerMessage;
    /// let msg = ServerMessage::decode(
    ///     r#"{"type":"progress_state","data":{"prompt_id":"p","nodes":{"2":{"value":3,"max":10,"state":"running","node_id":"2"}}}}"#,
    /// )
    /// .unwrap();
    /// let ServerMessage::ProgressState { nodes, .. } = msg else { panic!() };
    /// assert_eq!(nodes.decode().unwrap()[0].state, "running");
    /// ```
    pub fn decode(&self) -> Result<Vec<NodeProgress>, ProtocolError> {
        serde_json::from_str::<indexmap_like::Nodes>(self.0.get())
            .map(|n| n.0)
            .map_err(|e| ProtocolError::json("progress_state nodes", &e))
    }

    /// The JSON text as sent.
    pub fn raw(&self) -> &str {
        self.0.get()
    }
}

/// Equal when they decode to the same nodes (or, if either does not decode, the same text).
impl PartialEq for ProgressNodes {
    fn eq(&self, other: &Self) -> bool {
        match (self.decode(), other.decode()) {
            (Ok(a), Ok(b)) => a == b,
            _ => self.raw() == other.raw(),
        }
    }
}

mod indexmap_like {
    //! `progress_state.nodes` is an object keyed by node id; we keep its order as a list.
    use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};

    use super::NodeProgress;

    pub struct Nodes(pub Vec<NodeProgress>);

    impl<'de> Deserialize<'de> for Nodes {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Nodes;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("an object of node progress entries")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Nodes, A::Error> {
                    let mut out = Vec::new();
                    while let Some((_, v)) = map.next_entry::<de::IgnoredAny, NodeProgress>()? {
                        out.push(v);
                    }
                    Ok(Nodes(out))
                }
            }
            d.deserialize_map(V)
        }
    }
}
