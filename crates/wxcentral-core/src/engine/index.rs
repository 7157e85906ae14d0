//! From a token a caller presents to the credential it is.
//!
//! The drop-in proxy identifies the app (authorizer, component) by the `access_token` in a
//! request, so the hub can replace it with the current value and never relays a token it did
//! not issue. The map is keyed by the SHA-256 of the value: it holds no second copy of any token
//! in clear, and a lookup compares fixed-size digests rather than secret strings.
//!
//! Each slot keeps its current and its previous value indexed (a caller may still hold the
//! value a refresh just replaced, within WeChat's overlap). Entries point at their slot, so an
//! app replaced or removed takes exactly its own entries along, never a newer slot's that
//! happens to hold the same value.

use super::*;
use sha2::{Digest, Sha256};

/// Values kept indexed per slot: the current one and the one it replaced.
const KEPT: usize = 2;

pub(super) type TokenDigest = [u8; 32];

pub(super) fn digest(value: &str) -> TokenDigest {
    Sha256::digest(value.as_bytes()).into()
}

#[derive(Default)]
pub(super) struct TokenIndex {
    map: papaya::HashMap<TokenDigest, Arc<Slot>, foldhash::fast::RandomState>,
}

/// Whose token a presented value is (see [`Engine::resolve_token`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenOwner {
    pub appid: String,
    pub kind: CredentialKind,
    /// The value presented is the one held now (not a predecessor within the overlap).
    pub current: bool,
}

impl TokenIndex {
    /// Indexes `cred` as `slot`'s newest value; called where a value becomes current, under the
    /// slot's state lock (so two installs never interleave here).
    pub(super) fn record(&self, slot: &Arc<Slot>, cred: &Credential) {
        if !indexed_kind(slot.key.kind) {
            return;
        }
        let d = digest(cred.value.expose());
        let mut kept = lock(&slot.indexed);
        kept.retain(|k| *k != d);
        kept.push(d);
        let map = self.map.pin();
        map.insert(d, Arc::clone(slot));
        while kept.len() > KEPT {
            let old = kept.remove(0);
            let _ = map.remove_if(&old, |_, owner| Arc::ptr_eq(owner, slot));
        }
    }

    /// Drops every entry of `slot` (its app left the live set or was replaced).
    pub(super) fn forget(&self, slot: &Arc<Slot>) {
        let kept = std::mem::take(&mut *lock(&slot.indexed));
        let map = self.map.pin();
        for d in kept {
            let _ = map.remove_if(&d, |_, owner| Arc::ptr_eq(owner, slot));
        }
    }

    pub(super) fn get(&self, d: &TokenDigest) -> Option<Arc<Slot>> {
        self.map.pin().get(d).cloned()
    }
}

/// Only tokens are presented in API calls; tickets are handed to browsers, never to WeChat.
fn indexed_kind(kind: CredentialKind) -> bool {
    matches!(kind, CredentialKind::AccessToken | CredentialKind::ComponentAccessToken)
}

impl Inner {
    pub(super) fn resolve_token(&self, value: &str) -> Option<TokenOwner> {
        let slot = self.index.get(&digest(value))?;
        if slot.cancel.is_cancelled() {
            return None;
        }
        let cur = slot.current.load_full()?;
        let owner = |current| TokenOwner { appid: slot.key.appid.clone(), kind: slot.key.kind, current };
        if cur.value.ct_eq(value) {
            return Some(owner(true));
        }
        // A predecessor: it identifies the app while WeChat may still accept it, counted from
        // when its successor was fetched.
        let overlap_ms = i64::try_from(self.config.token_overlap_secs).unwrap_or(i64::MAX / 1000) * 1000;
        (now_ms() - cur.fetched_at_ms < overlap_ms).then(|| owner(false))
    }
}
