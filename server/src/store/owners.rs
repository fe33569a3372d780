//! Owner teams: IT assigns each agent the team responsible for it.
//!
//! The assignment lives in the `owner` column of `agents`, which reports never touch, so it
//! survives every report and resync. This module opens its own connection to the store file,
//! because assignments arrive through the HTTP API beside ingest's writer. It writes that one
//! column and nothing else, and it never creates an agent: an id the store does not know yet is
//! reported as not found.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{params, Connection};

/// The maximum length of an owner team name, in characters.
pub const MAX_OWNER_CHARS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum OwnerError {
    #[error("cannot open the store {path} for owner assignments: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("cannot assign owner {owner:?} to agent {agent_id}: {source}")]
    Write {
        agent_id: String,
        owner: String,
        source: rusqlite::Error,
    },
}

/// The reason an owner team name is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidOwner {
    #[error("the owner team name is longer than {MAX_OWNER_CHARS} characters")]
    TooLong,
    #[error("the owner team name contains a control character")]
    ControlCharacter,
    #[error("the owner team name starts or ends with white space")]
    Padded,
}

/// Checks an owner team name: at most [`MAX_OWNER_CHARS`] characters, no control characters,
/// no leading or trailing white space. The empty name is valid and means "no owner".
pub fn check_owner(owner: &str) -> Result<(), InvalidOwner> {
    if owner.chars().count() > MAX_OWNER_CHARS {
        return Err(InvalidOwner::TooLong);
    }
    if owner.chars().any(char::is_control) {
        return Err(InvalidOwner::ControlCharacter);
    }
    if owner.trim() != owner {
        return Err(InvalidOwner::Padded);
    }
    Ok(())
}

/// A cheap, cloneable handle; the connection is used by one request at a time.
#[derive(Clone)]
pub struct OwnerAssignments {
    connection: Arc<Mutex<Connection>>,
}

impl OwnerAssignments {
    /// Opens the store file, which [`super::Store::open`] has migrated.
    pub fn open(path: &Path) -> Result<Self, OwnerError> {
        let open_error = |source| OwnerError::Open {
            path: path.to_owned(),
            source,
        };
        let connection = Connection::open(path).map_err(open_error)?;
        connection
            .busy_timeout(Duration::from_secs(5))
            .map_err(open_error)?;
        Ok(Self {
            connection: Arc::new(Mutex::new(connection)),
        })
    }

    /// Sets the owner team of `agent_id`, which [`check_owner`] must have accepted. Returns
    /// `false` when the store has no such agent.
    pub fn assign(&self, agent_id: &str, owner: &str) -> Result<bool, OwnerError> {
        let connection = self
            .connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let changed = connection
            .prepare_cached("UPDATE agents SET owner = ?2 WHERE agent_id = ?1")
            .and_then(|mut statement| statement.execute(params![agent_id, owner]))
            .map_err(|source| OwnerError::Write {
                agent_id: agent_id.to_owned(),
                owner: owner.to_owned(),
                source,
            })?;
        Ok(changed > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_names_checked() {
        assert_eq!(check_owner(""), Ok(()));
        assert_eq!(check_owner("plant ops"), Ok(()));
        assert_eq!(check_owner(&"x".repeat(64)), Ok(()));
        assert_eq!(check_owner(&"x".repeat(65)), Err(InvalidOwner::TooLong));
        assert_eq!(check_owner("ops\n"), Err(InvalidOwner::ControlCharacter));
        assert_eq!(check_owner(" ops"), Err(InvalidOwner::Padded));
    }
}
