//! What an object store holds, for the object-store tests.

use futures::TryStreamExt;
use object_store::ObjectStore;
use object_store::path::Path as ObjectPath;

/// The names of the objects under `prefix`, sorted.
pub async fn object_names(backend: &dyn ObjectStore, prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = backend
        .list(Some(&ObjectPath::from(prefix)))
        .map_ok(|m| m.location.filename().unwrap_or_default().to_owned())
        .try_collect()
        .await
        .unwrap();
    names.sort();
    names
}
