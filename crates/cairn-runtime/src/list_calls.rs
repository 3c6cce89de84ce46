//! Listing and counting workflows through the visibility indexes.

use crate::error::ClientError;
use crate::node::Node;
use crate::visibility::{
    LIST_PAGE_SIZE_DEFAULT, LIST_PAGE_SIZE_MAX, Visibility, WorkflowPage, decode_page_token,
    status_name,
};
use cairn_core::RunStatus;
use cairn_core::visibility::{CompareOp, Condition, Filter};
use cairn_store::Store;
use cairn_types::SearchValue;

impl<S: Store> Node<S> {
    /// Workflows of this namespace, optionally of one type and/or status, newest first, a
    /// page at a time (see [`Self::list_workflows`]).
    pub async fn list(
        &self,
        workflow_type: Option<&str>,
        status: Option<RunStatus>,
        page_size: Option<usize>,
        page_token: Option<&str>,
    ) -> Result<WorkflowPage, ClientError> {
        let mut condition = Condition::True;
        let mut and = |c: Condition| {
            condition = match std::mem::replace(&mut condition, Condition::True) {
                Condition::True => c,
                other => Condition::And(Box::new(other), Box::new(c)),
            };
        };
        if let Some(t) = workflow_type {
            and(Condition::Compare(
                "WorkflowType".into(),
                CompareOp::Eq,
                SearchValue::Keyword(t.into()),
            ));
        }
        if let Some(s) = status {
            and(Condition::Compare(
                "ExecutionStatus".into(),
                CompareOp::Eq,
                SearchValue::Keyword(status_name(Some(s)).into()),
            ));
        }
        let filter = Filter {
            condition,
            order: Vec::new(),
        };
        self.list_filtered(&filter, page_size, page_token).await
    }

    /// Parses `query` in the visibility filter language against the built-in attributes and
    /// those registered on this node.
    pub fn parse_query(&self, query: &str) -> Result<Filter, ClientError> {
        let registry = &self.shared.registry;
        Ok(Filter::parse(query, &|name| {
            registry.search_attribute_type(name)
        })?)
    }

    /// The workflows matching `query` (see `cairn_core::visibility`), in its `ORDER BY` order
    /// (newest first without one), `page_size` at a time (default 100, at most 1,000).
    /// Visibility records and their indexes are written in the same transactions as the runs,
    /// so a page is never stale; pages are keyset-paged, so a workflow started meanwhile does
    /// not shift them. A page reads O(page) keys when the query names an indexed equality
    /// (see `visibility`), and may come back short (even empty) with a token after examining
    /// `LIST_SCAN_ENTRIES_MAX` entries.
    pub async fn list_workflows(
        &self,
        query: &str,
        page_size: Option<usize>,
        page_token: Option<&str>,
    ) -> Result<WorkflowPage, ClientError> {
        let filter = self.parse_query(query)?;
        self.list_filtered(&filter, page_size, page_token).await
    }

    pub(crate) async fn list_filtered(
        &self,
        filter: &Filter,
        page_size: Option<usize>,
        page_token: Option<&str>,
    ) -> Result<WorkflowPage, ClientError> {
        let page_size = page_size.unwrap_or(LIST_PAGE_SIZE_DEFAULT);
        if !(1..=LIST_PAGE_SIZE_MAX).contains(&page_size) {
            return Err(ClientError::InvalidPageSize {
                page_size,
                max: LIST_PAGE_SIZE_MAX,
            });
        }
        let after = page_token.map(decode_page_token).transpose()?;
        self.visibility().list(filter, page_size, after).await
    }

    /// How many workflows match `query`: one read of a maintained counter for no filter,
    /// `ExecutionStatus = s`, `WorkflowType = t` and both; otherwise a walk of the narrowest
    /// index, a chunk per transaction.
    pub async fn count_workflows(&self, query: &str) -> Result<u64, ClientError> {
        let filter = self.parse_query(query)?;
        self.visibility().count(&filter).await
    }

    /// How many workflow records were written so far (one read of a counter): a live view
    /// waits for it to move, since a continue-as-new or an attribute upsert moves no count.
    pub async fn visibility_changes(&self) -> Result<u64, ClientError> {
        self.visibility().changes().await
    }

    pub(crate) fn visibility(&self) -> Visibility<'_, S> {
        Visibility {
            store: &self.shared.store,
            keys: &self.shared.keys,
            namespace: &self.shared.config.namespace,
            registry: &self.shared.registry,
        }
    }
}
