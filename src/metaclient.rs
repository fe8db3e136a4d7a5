//! MetaClient: the one door between EdgeD and MetaManager (and through it, the cloud).
//!
//! EdgeD's subsystems never touch the store or the link directly: they read pods, ConfigMaps,
//! Secrets and Services and write statuses through this client, so offline and online behave
//! the same.

use crate::api::{self, PodStatus};
use crate::message::{Message, Resource};
use crate::metamanager::{key, MetaError, MetaManager, Table};
use std::sync::Arc;

/// A handle to MetaManager for EdgeD (cheap to clone).
#[derive(Clone)]
pub struct MetaClient {
    meta: Arc<MetaManager>,
}

impl MetaClient {
    /// A client over `meta`.
    pub fn new(meta: Arc<MetaManager>) -> Self {
        MetaClient { meta }
    }

    /// The way to the cloud (for what goes up without the store: events).
    pub fn upstream(&self) -> Arc<dyn crate::metamanager::Upstream> {
        self.meta.upstream().clone()
    }

    /// A ConfigMap: the store, else the cloud (stored before it is returned). `None`: not found.
    pub async fn config_map(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<api::ConfigMap>, MetaError> {
        self.object(Table::ConfigMap, namespace, name).await
    }

    /// A Secret: the store, else the cloud. `None`: not found.
    pub async fn secret(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<api::Secret>, MetaError> {
        self.object(Table::Secret, namespace, name).await
    }

    async fn object<T: serde::de::DeserializeOwned>(
        &self,
        table: Table,
        namespace: &str,
        name: &str,
    ) -> Result<Option<T>, MetaError> {
        let resource = Resource::new(namespace, table.resource_type(), name);
        // The store first, read in place on the caller's thread: the row is decoded straight
        // from the memory map, with no thread hop and no JSON tree in between.
        let stored = self
            .meta
            .store()
            .read(table, &key(namespace, name), |bytes| {
                decode_row::<T>(&resource, bytes)
            })?;
        if let Some(object) = stored {
            return object.map(Some);
        }
        // Not stored: MetaManager asks the cloud (and stores the answer).
        match self.meta.query(table, &resource).await? {
            None => Ok(None),
            Some(v) => decode_value(&resource, &v).map(Some),
        }
    }

    /// Every stored pod, as stored (raw JSON).
    pub async fn pods(&self) -> Result<Vec<serde_json::Value>, MetaError> {
        let store = self.meta.store().clone();
        let rows = smol::unblock(move || store.list(Table::Pod)).await?;
        Ok(rows.into_iter().map(|(_, v)| v).collect())
    }

    /// The stored status of a pod.
    pub async fn pod_status(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<PodStatus>, MetaError> {
        let store = self.meta.store().clone();
        let k = key(namespace, name);
        let v = smol::unblock(move || store.get(Table::PodStatus, &k)).await?;
        Ok(v.and_then(|v| serde_json::from_value(v).ok()))
    }

    /// Stores a pod's status (what `edged get` shows).
    pub async fn put_pod_status(
        &self,
        namespace: &str,
        name: &str,
        status: &PodStatus,
    ) -> Result<(), MetaError> {
        let store = self.meta.store().clone();
        let k = key(namespace, name);
        let v = serde_json::to_value(status).unwrap_or_default();
        smol::unblock(move || store.put(Table::PodStatus, &k, &v)).await?;
        Ok(())
    }

    /// Sends a pod's status upstream as a `podpatch` (content: a JSON string of
    /// `{"metadata":{"uid":..},"status":..}`). Offline: an error the caller keeps the status for.
    pub async fn send_pod_status(
        &self,
        namespace: &str,
        name: &str,
        uid: &str,
        status: &PodStatus,
    ) -> Result<(), MetaError> {
        let msg = Message::pod_status_patch(namespace, name, uid, status);
        self.meta
            .upstream()
            .send(msg)
            .await
            .map_err(MetaError::Upstream)
    }

    /// Forgets a deleted pod: its status row goes, and the cloud is told the pod is gone.
    pub async fn pod_deleted(
        &self,
        namespace: &str,
        name: &str,
        uid: &str,
    ) -> Result<(), MetaError> {
        let store = self.meta.store().clone();
        let k = key(namespace, name);
        smol::unblock(move || store.delete(Table::PodStatus, &k)).await?;
        let msg = Message::pod_deleted(namespace, name, uid);
        // Offline, the link keeps it for the next connection: the cloud already has our ACK
        // of its graceful delete and would wait for this confirmation forever. Without a
        // cloud there is no one to tell.
        let _ = self.meta.upstream().send(msg).await;
        Ok(())
    }

    /// Removes a pod the agent finished deleting on its own (a graceful delete from the cloud
    /// that ends here): its row and status go.
    pub async fn remove_pod(&self, namespace: &str, name: &str) -> Result<(), MetaError> {
        let store = self.meta.store().clone();
        let k = key(namespace, name);
        smol::unblock(move || {
            store.apply(&[
                crate::metamanager::Write::Delete(Table::Pod, k.clone()),
                crate::metamanager::Write::Delete(Table::PodStatus, k),
            ])
        })
        .await?;
        Ok(())
    }

    /// Stores the node's own record.
    pub async fn put_node(&self, node: &str, value: serde_json::Value) -> Result<(), MetaError> {
        let store = self.meta.store().clone();
        let k = key("null", node);
        smol::unblock(move || store.put(Table::Node, &k, &value)).await?;
        Ok(())
    }

    /// The node's stored record.
    pub async fn node(&self, node: &str) -> Result<Option<serde_json::Value>, MetaError> {
        let store = self.meta.store().clone();
        let k = key("null", node);
        Ok(smol::unblock(move || store.get(Table::Node, &k)).await?)
    }

    /// Asks the cloud for a service-account token (see [`MetaManager::request_token`]).
    pub async fn request_token(
        &self,
        namespace: &str,
        service_account: &str,
        request: serde_json::Value,
    ) -> Result<serde_json::Value, MetaError> {
        self.meta
            .request_token(namespace, service_account, request)
            .await
    }

    /// The cluster's Services for `node`'s pods: the cloud's list, else the stored one (see
    /// [`MetaManager::services`]).
    pub async fn services(&self, node: &str) -> Result<Vec<api::Service>, MetaError> {
        self.meta.services(node).await
    }

    /// Stores an issued token (the cloud's TokenRequest answer) under `row`.
    pub async fn put_token(&self, row: &str, answer: &serde_json::Value) -> Result<(), MetaError> {
        let store = self.meta.store().clone();
        let (k, v) = (row.to_string(), answer.clone());
        smol::unblock(move || store.put(Table::ServiceAccountToken, &k, &v)).await?;
        Ok(())
    }

    /// The stored token of `row`, as the cloud answered it.
    pub async fn stored_token(&self, row: &str) -> Result<Option<serde_json::Value>, MetaError> {
        let store = self.meta.store().clone();
        let k = row.to_string();
        Ok(smol::unblock(move || store.get(Table::ServiceAccountToken, &k)).await?)
    }

    /// Removes the stored tokens whose row `keep` refuses (by row key), in one transaction;
    /// returns how many went.
    pub async fn remove_tokens(
        &self,
        keep: impl Fn(&str) -> bool + Send + 'static,
    ) -> Result<usize, MetaError> {
        let store = self.meta.store().clone();
        let n = smol::unblock(move || -> Result<usize, crate::metamanager::StoreError> {
            let gone: Vec<crate::metamanager::Write> = store
                .list(Table::ServiceAccountToken)?
                .into_iter()
                .filter(|(k, _)| !keep(k))
                .map(|(k, _)| crate::metamanager::Write::Delete(Table::ServiceAccountToken, k))
                .collect();
            if !gone.is_empty() {
                store.apply(&gone)?;
            }
            Ok(gone.len())
        })
        .await?;
        Ok(n)
    }
}

/// Decodes a stored row: straight from its bytes when it is plain, else (a `null` field, or an
/// error to name) through [`api::decode`], which reads `null` as absent and names the field.
fn decode_row<T: serde::de::DeserializeOwned>(
    resource: &Resource,
    bytes: &[u8],
) -> Result<T, MetaError> {
    if let Ok(object) = serde_json::from_slice::<T>(bytes) {
        return Ok(object);
    }
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| MetaError::BadMessage {
            resource: resource.to_string(),
            reason: format!("stored row is not JSON: {e}"),
        })?;
    decode_value(resource, &value)
}

fn decode_value<T: serde::de::DeserializeOwned>(
    resource: &Resource,
    value: &serde_json::Value,
) -> Result<T, MetaError> {
    api::decode(&resource.to_string(), value).map_err(|e| MetaError::BadMessage {
        resource: resource.to_string(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metamanager::{Offline, Store};
    use serde_json::json;

    fn client() -> (tempfile::TempDir, MetaClient) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let (tx, _rx) = async_channel::unbounded();
        let meta = Arc::new(MetaManager::new(store, tx, Arc::new(Offline)));
        (dir, MetaClient::new(meta))
    }

    #[test]
    fn stored_objects_are_read_in_place_nulls_as_absent_and_bad_rows_named() {
        let (_d, c) = client();
        let store = c.meta.store();
        store
            .put(
                Table::ConfigMap,
                "ns/plain",
                &json!({"metadata": {"name": "plain"}, "data": {"k": "v"}}),
            )
            .unwrap();
        // Kubernetes clients send `null` for empty fields: read as absent, as Go does.
        store
            .put(
                Table::ConfigMap,
                "ns/nulls",
                &json!({"metadata": {"name": "nulls"}, "data": null, "binaryData": {"b": "eA=="}}),
            )
            .unwrap();
        store
            .put(Table::Secret, "ns/bad", &json!({"data": {"k": 7}}))
            .unwrap();
        smol::block_on(async {
            let cm = c.config_map("ns", "plain").await.unwrap().unwrap();
            assert_eq!(cm.data["k"], "v");
            let cm = c.config_map("ns", "nulls").await.unwrap().unwrap();
            assert!(cm.data.is_empty());
            assert_eq!(cm.binary_data["b"], "eA==");
            assert!(c.config_map("ns", "missing").await.unwrap().is_none());
            let e = c.secret("ns", "bad").await.unwrap_err().to_string();
            assert!(e.contains("ns/secret/bad") && e.contains("data.k"), "{e}");
        });
    }
}
