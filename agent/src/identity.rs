//! The agent's identity: an Ed25519 key pair created on first start and kept in the state
//! directory. The agent id is derived from the public key, so cloned disk images that share a
//! machine-id still get distinct ids as long as each clone starts with an empty state directory.

use std::io;
use std::path::{Path, PathBuf};

use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use tidegate_protocol::AgentId;

use crate::fsutil;

pub const KEY_FILE_NAME: &str = "agent-key.pk8";

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot read agent key {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write agent key {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("agent key {path} is not a valid Ed25519 PKCS#8 key: {reason}; move it away to create a new identity")]
    Invalid { path: PathBuf, reason: String },
    #[error("cannot generate a key pair: the system random source failed")]
    Random,
}

pub struct Identity {
    pub agent_id: AgentId,
    pub key_pair: Ed25519KeyPair,
}

impl Identity {
    /// Loads the key pair from `state_dir`, creating and storing a new one (mode 0600) when there
    /// is none yet.
    pub fn load_or_create(state_dir: &Path) -> Result<Self, IdentityError> {
        let path = state_dir.join(KEY_FILE_NAME);
        let pkcs8 = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                let document = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
                    .map_err(|_| IdentityError::Random)?;
                fsutil::write_atomic(&path, document.as_ref(), 0o600).map_err(|source| {
                    IdentityError::Write {
                        path: path.clone(),
                        source,
                    }
                })?;
                tracing::info!(path = %path.display(), "created a new agent key pair");
                document.as_ref().to_vec()
            }
            Err(source) => return Err(IdentityError::Read { path, source }),
        };
        let key_pair =
            Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(|error| IdentityError::Invalid {
                path: path.clone(),
                reason: error.to_string(),
            })?;
        let digest = ring::digest::digest(&ring::digest::SHA256, key_pair.public_key().as_ref());
        let digest: [u8; 32] = digest
            .as_ref()
            .try_into()
            .expect("SHA-256 digests are 32 bytes");
        Ok(Self {
            agent_id: AgentId::from_public_key_digest(&digest),
            key_pair,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_stable_across_loads() {
        let dir = tempfile::tempdir().unwrap();
        let first = Identity::load_or_create(dir.path()).unwrap();
        let second = Identity::load_or_create(dir.path()).unwrap();
        assert_eq!(first.agent_id, second.agent_id);
        assert_eq!(first.agent_id.as_str().len(), 32);
    }

    #[test]
    fn separate_state_dirs_get_separate_ids() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        assert_ne!(
            Identity::load_or_create(a.path()).unwrap().agent_id,
            Identity::load_or_create(b.path()).unwrap().agent_id
        );
    }

    #[test]
    fn corrupt_key_is_reported_with_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(KEY_FILE_NAME), b"not a key").unwrap();
        let error = Identity::load_or_create(dir.path())
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains(KEY_FILE_NAME), "{error}");
        assert!(error.contains("not a valid Ed25519"), "{error}");
    }
}
