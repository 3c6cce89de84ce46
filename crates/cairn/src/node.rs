//! Building and running a node with typed workflow and activity functions.

use crate::client::Client;
use crate::workflow::{Ctx, function_name};
use cairn_core::{WorkflowContext, WorkflowError};
use cairn_runtime::{ActivityContext, ClientError, Metrics, NodeConfig, Registry};
use cairn_store::Store;
use cairn_types::{Failure, Payload};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::future::Future;
use std::sync::Arc;

/// Collects workflow and activity functions, then starts a node.
///
/// Each type is registered under a stable name, which history records: the function's own name
/// by default, or the one given to [`Self::workflow_named`] / [`Self::activity_named`].
/// Registering two workflows, or two activities, under one name panics with both functions'
/// names: a name must mean one function for good.
#[derive(Default)]
pub struct NodeBuilder {
    registry: Registry,
    /// (kind, name) → the function registered under it.
    names: std::collections::HashMap<(&'static str, &'static str), &'static str>,
    config: NodeConfig,
}

impl std::fmt::Debug for NodeBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeBuilder")
            .field("registry", &self.registry)
            .finish()
    }
}

impl NodeBuilder {
    fn claim_name<F: 'static>(&mut self, kind: &'static str, given: Option<&str>) -> &'static str {
        let name = match given {
            Some(given) => {
                assert!(
                    !given.is_empty() && given.len() <= cairn_types::limits::TYPE_NAME_BYTES_MAX,
                    "a {kind} name must be 1 to {} bytes, not {given:?}",
                    cairn_types::limits::TYPE_NAME_BYTES_MAX
                );
                crate::workflow::give_name::<F>(given)
            }
            None => function_name::<F>(),
        };
        let full = std::any::type_name::<F>();
        if let Some(previous) = self.names.insert((kind, name), full) {
            panic!("two {kind} registrations under the name {name:?}: {previous} and {full}");
        }
        name
    }

    /// Registers workflow function `f` under its own name.
    pub fn workflow<F, I, O, Fut>(self, f: F) -> Self
    where
        F: Fn(Ctx, I) -> Fut + Send + Sync + 'static,
        I: DeserializeOwned + 'static,
        O: Serialize + 'static,
        Fut: Future<Output = Result<O, WorkflowError>> + 'static,
    {
        self.register_workflow(f, None)
    }

    /// Registers workflow function `f` under `name`, which history then records and every
    /// start of `f` in this process uses (so the function can be renamed later without
    /// orphaning its running workflows).
    pub fn workflow_named<F, I, O, Fut>(self, name: &str, f: F) -> Self
    where
        F: Fn(Ctx, I) -> Fut + Send + Sync + 'static,
        I: DeserializeOwned + 'static,
        O: Serialize + 'static,
        Fut: Future<Output = Result<O, WorkflowError>> + 'static,
    {
        self.register_workflow(f, Some(name))
    }

    fn register_workflow<F, I, O, Fut>(mut self, f: F, given: Option<&str>) -> Self
    where
        F: Fn(Ctx, I) -> Fut + Send + Sync + 'static,
        I: DeserializeOwned + 'static,
        O: Serialize + 'static,
        Fut: Future<Output = Result<O, WorkflowError>> + 'static,
    {
        let name = self.claim_name::<F>("workflow", given);
        let f = Arc::new(f);
        self.registry.workflow(
            name,
            Arc::new(move |ctx: WorkflowContext, input: Payload| {
                let f = f.clone();
                Box::pin(async move {
                    let input: I = input.decode().map_err(|e| {
                        WorkflowError::Failed(
                            Failure::new("InputDoesNotDecode", e.to_string()).non_retryable(),
                        )
                    })?;
                    let output = f(Ctx::new(ctx), input).await?;
                    Payload::encode(&output).map_err(|e| {
                        WorkflowError::Failed(Failure::new("ResultDoesNotEncode", e.to_string()))
                    })
                })
            }),
        );
        self.registry.workflow_input_check(
            name,
            Arc::new(|input: &Payload| input.decode::<I>().map(|_| ()).map_err(|e| e.to_string())),
        );
        self
    }

    /// Registers activity function `f` under its own name.
    pub fn activity<F, I, O, Fut>(self, f: F) -> Self
    where
        F: Fn(ActivityContext, I) -> Fut + Send + Sync + 'static,
        I: DeserializeOwned + Send + 'static,
        O: Serialize + 'static,
        Fut: Future<Output = Result<O, Failure>> + Send + 'static,
    {
        self.register_activity(f, None)
    }

    /// Registers activity function `f` under `name`, which history then records and every
    /// `ctx.activity(f, ..)` in this process schedules.
    pub fn activity_named<F, I, O, Fut>(self, name: &str, f: F) -> Self
    where
        F: Fn(ActivityContext, I) -> Fut + Send + Sync + 'static,
        I: DeserializeOwned + Send + 'static,
        O: Serialize + 'static,
        Fut: Future<Output = Result<O, Failure>> + Send + 'static,
    {
        self.register_activity(f, Some(name))
    }

    fn register_activity<F, I, O, Fut>(mut self, f: F, given: Option<&str>) -> Self
    where
        F: Fn(ActivityContext, I) -> Fut + Send + Sync + 'static,
        I: DeserializeOwned + Send + 'static,
        O: Serialize + 'static,
        Fut: Future<Output = Result<O, Failure>> + Send + 'static,
    {
        let name = self.claim_name::<F>("activity", given);
        let f = Arc::new(f);
        self.registry.activity(
            name,
            Arc::new(move |ctx: ActivityContext, input: Payload| {
                let f = f.clone();
                Box::pin(async move {
                    let input: I = input.decode().map_err(|e| {
                        Failure::new("InputDoesNotDecode", e.to_string()).non_retryable()
                    })?;
                    let output = f(ctx, input).await?;
                    Payload::encode(&output)
                        .map_err(|e| Failure::new("ResultDoesNotEncode", e.to_string()))
                })
            }),
        );
        self
    }

    /// Registers custom search attribute `attribute` (name and type), so visibility queries
    /// can name it. Workflows set it with `ctx.upsert_search_attribute`.
    pub fn search_attribute<T: crate::SearchAttributeType>(
        mut self,
        attribute: &crate::SearchAttribute<T>,
    ) -> Self {
        self.registry
            .search_attribute(attribute.name(), attribute.search_type());
        self
    }

    /// Node settings. Default [`NodeConfig::default`].
    pub fn config(mut self, config: NodeConfig) -> Self {
        self.config = config;
        self
    }

    /// Starts the node on `store` (recovering whatever the store says is pending).
    pub async fn start<S: Store>(self, store: S) -> Result<Node<S>, ClientError> {
        let inner = cairn_runtime::Node::start(store, self.registry, self.config).await?;
        // Batches started before a restart (here or on a node that died) go on.
        inner.run_batches();
        Ok(Node {
            inner: Arc::new(inner),
        })
    }
}

/// A running node (library mode: the workflow code runs in this process).
pub struct Node<S: Store> {
    inner: Arc<cairn_runtime::Node<S>>,
}

impl<S: Store> std::fmt::Debug for Node<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

impl Node<cairn_store::MemStore> {
    /// Starts describing a node.
    pub fn builder() -> NodeBuilder {
        NodeBuilder::default()
    }
}

impl<S: Store> Node<S> {
    /// The untyped runtime node, for serving it over HTTP (`cairn-server`).
    pub fn runtime(&self) -> Arc<cairn_runtime::Node<S>> {
        self.inner.clone()
    }

    /// A client talking to this node in-process.
    pub fn client(&self) -> Client<S> {
        Client::new(self.inner.clone())
    }

    /// The node's counters.
    pub fn metrics(&self) -> &Metrics {
        self.inner.metrics()
    }

    /// This node's id in the cluster.
    pub fn node_id(&self) -> &str {
        self.inner.node_id()
    }

    /// The shards this node holds now, with their lease epochs.
    pub fn held_shards(&self) -> Vec<(u32, u64)> {
        self.inner.held_shards()
    }

    /// Membership and leases of the whole cluster (from the store), and what this node holds.
    pub async fn cluster_status(&self) -> Result<crate::ClusterStatus, ClientError> {
        self.inner.cluster_status().await
    }

    /// Leaves the cluster at once, handing every shard to the other nodes; client calls keep
    /// working until [`Node::shutdown`] (which drains first if this has not). A server calls
    /// this when asked to stop, before it lets requests in progress finish.
    pub async fn drain(&self) {
        self.inner.drain().await;
    }

    /// Stops the node gracefully: its actors stop, queued commits finish.
    pub async fn shutdown(self) {
        self.inner.shutdown().await;
    }

    /// Stops the node abruptly, as a crash would: actors are killed mid-work and nothing more
    /// is written. Clients of this node fail from then on.
    pub fn crash(self) {
        self.inner.crash();
    }
}
