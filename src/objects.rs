//! The ConfigMap and Secret managers: a cache each, in front of MetaClient (store first, then
//! the cloud). An update or delete message for an object drops its cache entry, so the next
//! read (a volume refresh, a container start) sees the new object.

use crate::api::{ConfigMap, Secret};
use crate::metaclient::MetaClient;
use crate::metamanager::MetaError;
use std::cell::RefCell;
use std::collections::HashMap;

/// A cache of one kind of object, keyed `namespace/name` (a miss is cached too, until the
/// object arrives and invalidates it).
pub struct Cache<T> {
    entries: RefCell<HashMap<String, Option<T>>>,
}

impl<T: Clone> Default for Cache<T> {
    fn default() -> Self {
        Cache {
            entries: RefCell::new(HashMap::new()),
        }
    }
}

impl<T: Clone> Cache<T> {
    fn get(&self, key: &str) -> Option<Option<T>> {
        self.entries.borrow().get(key).cloned()
    }
    fn put(&self, key: String, v: Option<T>) {
        self.entries.borrow_mut().insert(key, v);
    }
    /// Drops an entry.
    pub fn invalidate(&self, namespace: &str, name: &str) {
        self.entries
            .borrow_mut()
            .remove(&format!("{namespace}/{name}"));
    }
}

/// Both managers, over one MetaClient.
pub struct ObjectManager {
    meta: MetaClient,
    /// The ConfigMap cache.
    pub config_maps: Cache<ConfigMap>,
    /// The Secret cache.
    pub secrets: Cache<Secret>,
}

impl ObjectManager {
    /// Managers reading through `meta`.
    pub fn new(meta: MetaClient) -> Self {
        ObjectManager {
            meta,
            config_maps: Cache::default(),
            secrets: Cache::default(),
        }
    }

    /// A ConfigMap (`None`: not found anywhere).
    pub async fn config_map(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<ConfigMap>, MetaError> {
        let key = format!("{namespace}/{name}");
        if let Some(v) = self.config_maps.get(&key) {
            return Ok(v);
        }
        let v = self.meta.config_map(namespace, name).await?;
        self.config_maps.put(key, v.clone());
        Ok(v)
    }

    /// A Secret (`None`: not found anywhere).
    pub async fn secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>, MetaError> {
        let key = format!("{namespace}/{name}");
        if let Some(v) = self.secrets.get(&key) {
            return Ok(v);
        }
        let v = self.meta.secret(namespace, name).await?;
        self.secrets.put(key, v.clone());
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{op, Message};
    use crate::metamanager::{MetaManager, Offline, Store};
    use std::sync::Arc;

    #[test]
    fn cache_then_invalidate() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let (tx, _rx) = async_channel::unbounded();
        let mm = Arc::new(MetaManager::new(store, tx, Arc::new(Offline)));
        let objects = ObjectManager::new(MetaClient::new(mm.clone()));
        smol::block_on(async {
            assert!(objects.config_map("default", "c").await.unwrap().is_none());
            let m = Message::new("manifest", "resource", op::INSERT, "default/configmap/c")
                .with_content(serde_json::json!({"metadata": {"name": "c"}, "data": {"k": "v1"}}));
            mm.handle(m).await.unwrap();
            // The cached miss stands until the change is told to the cache.
            assert!(objects.config_map("default", "c").await.unwrap().is_none());
            objects.config_maps.invalidate("default", "c");
            assert_eq!(
                objects
                    .config_map("default", "c")
                    .await
                    .unwrap()
                    .unwrap()
                    .data["k"],
                "v1"
            );
        });
    }
}
