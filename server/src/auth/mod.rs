//! API tokens and the roles they carry.
//!
//! It owns the `tokens` table of the store. A token is `tg_` followed by 64 hex digits: 32 random
//! bytes from ring's `SystemRandom`. The table keeps the token's name, role, creation and
//! revocation, and only the SHA-256 of the token text, so reading the file gives no usable token.
//! The plaintext exists once, in the response to the request that created it.
//!
//! Roles: `admin` manages tokens and may do everything; `it` runs rollouts and assigns hosts;
//! `ot` defines windows and schedules; `security` publishes bundles and trust roots; `viewer` only
//! reads. Which role may call which route is decided in one table, [`policy::ROUTE_ROLES`], and
//! enforced by the [`policy::authorize`] middleware. Creating and revoking tokens is recorded in
//! the audit log in the same transaction.

mod http;
pub mod policy;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ring::digest::{digest, SHA256};
use ring::rand::{SecureRandom, SystemRandom};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::audit::{self, to_hex, AuditEntry};

pub use http::{routes, CreateTokenRequest, CreatedToken, TokenList, TOKENS_PATH};
pub use policy::{authorize, AuthState, RouteRoles, ROUTE_ROLES};

/// The prefix of every token text, so a token in a log or a file is easy to recognise.
pub const TOKEN_PREFIX: &str = "tg_";

/// The name of the token created on the first start.
pub const FIRST_ADMIN_NAME: &str = "admin";

/// The maximum length of a token name, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// A token's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    It,
    Ot,
    Security,
    Viewer,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Admin,
        Role::It,
        Role::Ot,
        Role::Security,
        Role::Viewer,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::It => "it",
            Self::Ot => "ot",
            Self::Security => "security",
            Self::Viewer => "viewer",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = TokenError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == text)
            .ok_or_else(|| TokenError::InvalidRole {
                role: text.to_owned(),
            })
    }
}

/// The caller of an API request, as the token it presented names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub role: Role,
}

impl Principal {
    /// Returns the actor of the audit entries this caller causes: `token:NAME/ROLE`.
    pub fn actor(&self) -> String {
        format!("token:{}/{}", self.name, self.role)
    }
}

/// One token as `GET /api/v1/tokens` lists it: never the token itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    pub name: String,
    pub role: Role,
    pub created_at_unix_s: i64,
    /// The actor that created it.
    pub created_by: String,
    pub revoked_at_unix_s: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot open the token table in {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("the token table in {path} failed: {source}")]
    Store {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("invalid role {role:?}: expected one of admin, it, ot, security, viewer")]
    InvalidRole { role: String },
    #[error(
        "invalid token name {name:?}: expected 1 to {MAX_NAME_LEN} letters, digits, '.', '_', \
         '-' or '@'"
    )]
    InvalidName { name: String },
    #[error("a token named {name:?} exists already; pick another name")]
    NameTaken { name: String },
    #[error("no token is named {name:?}")]
    NotFound { name: String },
    #[error("token {name:?} was revoked already")]
    AlreadyRevoked { name: String },
    #[error(
        "token {name:?} is the last admin token that is not revoked; create another admin token \
         first"
    )]
    LastAdmin { name: String },
    #[error("the system random number generator failed")]
    Random,
    #[error("cannot hand out the first admin token: {0}")]
    Deliver(String),
}

/// Generates a new token text from 32 random bytes.
pub fn generate_token(random: &dyn SecureRandom) -> Result<String, TokenError> {
    let mut secret = [0u8; 32];
    random.fill(&mut secret).map_err(|_| TokenError::Random)?;
    Ok(format!("{TOKEN_PREFIX}{}", to_hex(&secret)))
}

/// Computes the SHA-256 of a token text in lowercase hex, as the `tokens` table stores it.
pub fn token_hash(token: &str) -> String {
    to_hex(digest(&SHA256, token.as_bytes()).as_ref())
}

/// Returns whether `token` has the form of a token, so a malformed one costs no lookup.
fn well_formed(token: &str) -> bool {
    token.strip_prefix(TOKEN_PREFIX).is_some_and(|secret| {
        secret.len() == 64 && secret.bytes().all(|byte| byte.is_ascii_hexdigit())
    })
}

fn validate_name(name: &str) -> Result<(), TokenError> {
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if valid {
        Ok(())
    } else {
        Err(TokenError::InvalidName {
            name: name.chars().take(MAX_NAME_LEN + 1).collect(),
        })
    }
}

/// The token table of one store file. Clones share one connection; every call blocks on SQLite.
#[derive(Clone)]
pub struct Tokens {
    path: PathBuf,
    connection: Arc<Mutex<Connection>>,
    random: Arc<SystemRandom>,
}

impl Tokens {
    /// Opens the tokens of a store that [`crate::store::Store::open`] has migrated.
    pub fn open(path: &Path) -> Result<Self, TokenError> {
        let open_error = |source| TokenError::Open {
            path: path.to_owned(),
            source,
        };
        let connection = Connection::open(path).map_err(open_error)?;
        connection
            .busy_timeout(Duration::from_secs(5))
            .map_err(open_error)?;
        Ok(Self {
            path: path.to_owned(),
            connection: Arc::new(Mutex::new(connection)),
            random: Arc::new(SystemRandom::new()),
        })
    }

    fn store_error(&self) -> impl Fn(rusqlite::Error) -> TokenError + '_ {
        |source| TokenError::Store {
            path: self.path.clone(),
            source,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Returns the caller a token names, or `None` when the token is malformed, unknown or
    /// revoked.
    pub fn authenticate(&self, token: &str) -> Result<Option<Principal>, TokenError> {
        if !well_formed(token) {
            return Ok(None);
        }
        let connection = self.lock();
        let row: Option<(String, String)> = connection
            .prepare_cached(
                "SELECT name, role FROM tokens
                 WHERE token_hash = ?1 AND revoked_at_unix_s IS NULL",
            )
            .and_then(|mut statement| {
                statement
                    .query_row([token_hash(token)], |row| Ok((row.get(0)?, row.get(1)?)))
                    .optional()
            })
            .map_err(self.store_error())?;
        // A role this build does not know (written by a newer one) grants nothing.
        Ok(row.and_then(|(name, role)| {
            let role = role.parse().ok()?;
            Some(Principal { name, role })
        }))
    }

    /// Creates a token and returns its record and its text, which is never stored. The audit
    /// entry `token.created` commits with it.
    pub fn create(
        &self,
        name: &str,
        role: Role,
        actor: &str,
        now_unix_s: i64,
    ) -> Result<(TokenInfo, String), TokenError> {
        self.create_then(name, role, actor, now_unix_s, |_| Ok(()))
    }

    /// Creates a token like [`Tokens::create`], and calls `deliver` with its text before the
    /// transaction commits: when `deliver` fails, no token is stored.
    fn create_then(
        &self,
        name: &str,
        role: Role,
        actor: &str,
        now_unix_s: i64,
        deliver: impl FnOnce(&str) -> Result<(), TokenError>,
    ) -> Result<(TokenInfo, String), TokenError> {
        validate_name(name)?;
        let token = generate_token(self.random.as_ref())?;
        let mut connection = self.lock();
        let store_error = self.store_error();
        let transaction = connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&store_error)?;

        let exists: bool = transaction
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM tokens WHERE name = ?1)",
                [name],
                |row| row.get(0),
            )
            .map_err(&store_error)?;
        if exists {
            return Err(TokenError::NameTaken {
                name: name.to_owned(),
            });
        }

        transaction
            .execute(
                "INSERT INTO tokens (name, role, token_hash, created_at_unix_s, created_by)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![name, role.as_str(), token_hash(&token), now_unix_s, actor],
            )
            .map_err(&store_error)?;
        audit::append(
            &transaction,
            now_unix_s,
            &AuditEntry::new(
                actor,
                "token.created",
                name,
                json!({"name": name, "role": role.as_str()}),
            ),
        )
        .map_err(&store_error)?;
        deliver(&token)?;
        transaction.commit().map_err(&store_error)?;

        let info = TokenInfo {
            name: name.to_owned(),
            role,
            created_at_unix_s: now_unix_s,
            created_by: actor.to_owned(),
            revoked_at_unix_s: None,
        };
        Ok((info, token))
    }

    /// Creates the admin token [`FIRST_ADMIN_NAME`] when the table is empty, calls `deliver` with
    /// it before committing, and returns it. Returns `None` when any token exists, revoked or not,
    /// so the first token is handed out once.
    pub fn create_first_admin(
        &self,
        now_unix_s: i64,
        deliver: impl FnOnce(&str) -> Result<(), TokenError>,
    ) -> Result<Option<String>, TokenError> {
        let count: i64 = self
            .lock()
            .query_row("SELECT count(*) FROM tokens", [], |row| row.get(0))
            .map_err(self.store_error())?;
        if count > 0 {
            return Ok(None);
        }
        let (_, token) = self.create_then(
            FIRST_ADMIN_NAME,
            Role::Admin,
            audit::SERVER_ACTOR,
            now_unix_s,
            deliver,
        )?;
        Ok(Some(token))
    }

    /// Lists every token, revoked ones included, by name.
    pub fn list(&self) -> Result<Vec<TokenInfo>, TokenError> {
        let connection = self.lock();
        let mut statement = connection
            .prepare_cached(
                "SELECT name, role, created_at_unix_s, created_by, revoked_at_unix_s
                 FROM tokens ORDER BY name",
            )
            .map_err(self.store_error())?;
        let rows = statement
            .query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get(2)?,
                    row.get(3)?,
                    row.get(4)?,
                ))
            })
            .map_err(self.store_error())?;
        let mut tokens = Vec::new();
        for row in rows {
            let (name, role, created_at_unix_s, created_by, revoked_at_unix_s) =
                row.map_err(self.store_error())?;
            // Rows with a role this build does not know are left out: they grant nothing here.
            if let Ok(role) = role.parse() {
                tokens.push(TokenInfo {
                    name,
                    role,
                    created_at_unix_s,
                    created_by,
                    revoked_at_unix_s,
                });
            }
        }
        Ok(tokens)
    }

    /// Revokes a token, so it authenticates no more, and records `token.revoked`. The last admin
    /// token that is not revoked cannot be revoked, so someone can always manage tokens.
    pub fn revoke(
        &self,
        name: &str,
        actor: &str,
        now_unix_s: i64,
    ) -> Result<TokenInfo, TokenError> {
        let mut connection = self.lock();
        let store_error = self.store_error();
        let transaction = connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&store_error)?;

        let row: Option<(String, i64, String, Option<i64>)> = transaction
            .query_row(
                "SELECT role, created_at_unix_s, created_by, revoked_at_unix_s
                 FROM tokens WHERE name = ?1",
                [name],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
            )
            .optional()
            .map_err(&store_error)?;
        let Some((role, created_at_unix_s, created_by, revoked_at_unix_s)) = row else {
            return Err(TokenError::NotFound {
                name: name.to_owned(),
            });
        };
        if revoked_at_unix_s.is_some() {
            return Err(TokenError::AlreadyRevoked {
                name: name.to_owned(),
            });
        }

        let role: Role = role.parse()?;
        if role == Role::Admin {
            let active_admins: i64 = transaction
                .query_row(
                    "SELECT count(*) FROM tokens WHERE role = 'admin' AND revoked_at_unix_s IS NULL",
                    [],
                    |row| row.get(0),
                )
                .map_err(&store_error)?;
            if active_admins <= 1 {
                return Err(TokenError::LastAdmin {
                    name: name.to_owned(),
                });
            }
        }

        transaction
            .execute(
                "UPDATE tokens SET revoked_at_unix_s = ?2 WHERE name = ?1",
                params![name, now_unix_s],
            )
            .map_err(&store_error)?;
        audit::append(
            &transaction,
            now_unix_s,
            &AuditEntry::new(
                actor,
                "token.revoked",
                name,
                json!({"name": name, "role": role.as_str()}),
            ),
        )
        .map_err(&store_error)?;
        transaction.commit().map_err(&store_error)?;

        Ok(TokenInfo {
            name: name.to_owned(),
            role,
            created_at_unix_s,
            created_by,
            revoked_at_unix_s: Some(now_unix_s),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_text_has_prefix_and_64_hex_digits() {
        let token = generate_token(&SystemRandom::new()).unwrap();
        assert!(token.starts_with("tg_"), "{token}");
        assert_eq!(token.len(), 3 + 64, "{token}");
        assert!(well_formed(&token));
        assert!(!well_formed("tg_abc"));
        assert!(!well_formed(&token.replace("tg_", "xx_")));
    }

    #[test]
    fn token_hash_is_sha256_hex() {
        // SHA-256 of "abc", from FIPS 180-2 appendix B.1.
        assert_eq!(
            token_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn role_names_parse_back() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
        }
        assert!(matches!(
            "root".parse::<Role>(),
            Err(TokenError::InvalidRole { .. })
        ));
    }

    #[test]
    fn token_names_are_checked() {
        assert!(validate_name("alice@ops.example").is_ok());
        assert!(validate_name("ci-bot_2").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name("has space").is_err());
        assert!(validate_name(&"a".repeat(65)).is_err());
    }
}
