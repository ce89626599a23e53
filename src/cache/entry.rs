//! One cached child: its identity, and the rest as compressed JSON against a dictionary of its
//! kind.

use std::sync::OnceLock;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde_json::Value;

use super::compact::{Compact, IDENTITY, SERVER_METADATA, remove};
use super::token::Token;
use crate::api::CanaryRelease;

/// One cached child.
#[derive(Debug, PartialEq, Eq)]
pub struct Entry {
    pub uid: Token,
    pub resource_version: Token,
    generation: Option<i64>,
    /// The uid of the object's controlling owner, if any.
    pub controller_uid: Option<Token>,
    /// The name of the controlling CanaryRelease when the owner references are exactly the one
    /// the operator sets: they are then left out of the body (the same 150 bytes in every child).
    release: Option<Box<str>>,
    /// Whether the object is being deleted (it has a deletionTimestamp).
    pub deleting: bool,
    /// The object without name, namespace, uid, resourceVersion and generation, and without
    /// [`Compact::SERVER_FIELDS`], as compact JSON compressed with LZ4 against the kind's
    /// [`Dictionary`]: what it shares with other objects of its kind is not held again, for a
    /// microsecond or two.
    pub(super) body: Box<[u8]>,
}

/// A cached copy that cannot be read back; it was written by this process, so this is a bug.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not valid LZ4: {0}")]
    Compression(#[from] lz4_flex::block::DecompressError),
    #[error("not the object's JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// The text the bodies of one kind are compressed against: the first body of the kind the cache
/// saw, up to [`Dictionary::LIMIT`]. It never changes once set, so every body can be read back and
/// two copies of the same content have the same bytes ([`Entry::same_content`]). A first object
/// unlike the rest costs only compression, never correctness.
#[derive(Debug, Default)]
pub(super) struct Dictionary(OnceLock<Box<[u8]>>);

impl Dictionary {
    /// LZ4 refers back at most 64 KiB, and compressing against a dictionary first indexes it all:
    /// a child's structure fits in far less.
    const LIMIT: usize = 8 * 1024;

    /// The dictionary, set from `body` if it is not set yet.
    fn or_from(&self, body: &[u8]) -> &[u8] {
        self.0
            .get_or_init(|| body[..body.len().min(Self::LIMIT)].into())
    }

    fn bytes(&self) -> &[u8] {
        self.0.get().map_or(&[], |d| d)
    }
}

impl Entry {
    pub(super) fn new<K: Compact>(object: &K, dictionary: &Dictionary) -> Entry {
        let meta = object.meta();
        let controller_uid = controller_of(meta).map(|o| o.uid.as_str());
        let release = match meta.owner_references.as_deref() {
            Some([only])
                if *only == CanaryRelease::child_owner_reference(&only.name, &only.uid) =>
            {
                Some(&only.name)
            }
            _ => None,
        };
        // Serializing a typed object cannot fail in practice; if it did, the empty body fails to
        // parse when read, and that reconcile fails and retries instead of comparing with nothing.
        let body = match serde_json::to_value(object) {
            Ok(mut value) => {
                if let Some(Value::Object(m)) = value.get_mut("metadata") {
                    for field in IDENTITY {
                        m.remove(*field);
                    }
                    if release.is_some() {
                        m.remove("ownerReferences");
                    }
                }
                for path in SERVER_METADATA.iter().chain(K::SERVER_FIELDS) {
                    remove(&mut value, path);
                }
                K::trim(&mut value);
                value.to_string()
            }
            Err(_) => String::new(),
        };
        Entry {
            uid: Token::new(meta.uid.as_deref().unwrap_or_default()),
            resource_version: Token::new(meta.resource_version.as_deref().unwrap_or_default()),
            generation: meta.generation,
            controller_uid: controller_uid.map(Token::new),
            release: release.map(|name| name.as_str().into()),
            deleting: meta.deletion_timestamp.is_some(),
            body: lz4_flex::block::compress_prepend_size_with_dict(
                body.as_bytes(),
                dictionary.or_from(body.as_bytes()),
            )
            .into_boxed_slice(),
        }
    }

    /// The typed object again, without the fields the cache left out.
    pub(super) fn object<K: Compact>(
        &self,
        dictionary: &Dictionary,
        namespace: &str,
        name: &str,
    ) -> Result<K, DecodeError> {
        let mut object: K = serde_json::from_slice(&self.json(dictionary)?)?;
        let meta = object.meta_mut();
        meta.name = Some(name.to_owned());
        meta.namespace = Some(namespace.to_owned());
        meta.uid = Some(self.uid.to_string());
        meta.resource_version = Some(self.resource_version.to_string());
        meta.generation = self.generation;
        if let (Some(release), Some(uid)) = (&self.release, &self.controller_uid) {
            meta.owner_references = Some(vec![CanaryRelease::child_owner_reference(
                release,
                &uid.to_string(),
            )]);
        }
        Ok(object)
    }

    pub(super) fn json(&self, dictionary: &Dictionary) -> Result<Vec<u8>, DecodeError> {
        Ok(lz4_flex::block::decompress_size_prepended_with_dict(
            &self.body,
            dictionary.bytes(),
        )?)
    }

    /// Whether `other` (a later copy of the same object) differs in anything the reconciler
    /// reads. The resourceVersion does not count: it changes with every write.
    pub(super) fn same_content(&self, other: &Entry) -> bool {
        self.body == other.body
            && self.uid == other.uid
            && self.generation == other.generation
            && self.controller_uid == other.controller_uid
            && self.release == other.release
            && self.deleting == other.deleting
    }
}

/// The owner reference marked as the object's controller, if any.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
}
