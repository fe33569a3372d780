//! `tidegate tokens`: create, list and revoke API tokens through the server, with an admin token.

use std::io::Write;

use clap::{Args, Subcommand};

use super::client::ApiClient;
use super::format::{relative_time, render_table};
use super::{CliError, Context};
use crate::auth::{CreateTokenRequest, CreatedToken, TokenInfo, TokenList, TOKENS_PATH};

#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Create a token and print it; the server keeps only its hash, so it is shown only once
    Create(CreateArgs),
    /// List every token's name, role, creator and revocation (never the tokens themselves)
    List(ListArgs),
    /// Revoke a token, so the server no longer accepts it
    Revoke(RevokeArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The token's role: admin, it, ot, security or viewer
    #[arg(long, value_name = "ROLE")]
    pub role: String,
    /// A unique name for the token, such as the person or job that uses it
    #[arg(long, value_name = "NAME")]
    pub name: String,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print the server's JSON instead of a table
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// The name of the token to revoke
    #[arg(value_name = "NAME")]
    pub name: String,
}

pub fn run(
    command: TokensCommand,
    client: &ApiClient,
    context: &Context,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    match command {
        TokensCommand::Create(args) => {
            let request = CreateTokenRequest {
                name: args.name,
                role: args.role,
            };
            let created: CreatedToken = client.post_json(TOKENS_PATH, &request)?;
            // The token alone on stdout, so `tidegate tokens create ... > file` stores just it.
            writeln!(out, "{}", created.token)?;
            eprintln!(
                "created token {} with role {}; the server keeps only its hash, so this is the \
                 only time it is shown",
                created.name, created.role
            );
            Ok(())
        }
        TokensCommand::List(args) => {
            let list: TokenList = client.get_json(TOKENS_PATH)?;
            if args.json {
                let text = serde_json::to_string_pretty(&list).expect("a token list encodes");
                writeln!(out, "{text}")?;
                return Ok(());
            }
            out.write_all(token_table(&list.tokens, context.now_unix_s).as_bytes())?;
            Ok(())
        }
        TokensCommand::Revoke(args) => {
            let path = format!("{TOKENS_PATH}/{}/revoke", args.name);
            let revoked: TokenInfo = client.post_json(&path, &serde_json::json!({}))?;
            writeln!(
                out,
                "revoked token {} (role {}); the server no longer accepts it",
                revoked.name, revoked.role
            )?;
            Ok(())
        }
    }
}

fn token_table(tokens: &[TokenInfo], now_unix_s: i64) -> String {
    let rows: Vec<Vec<String>> = tokens
        .iter()
        .map(|token| {
            vec![
                token.name.clone(),
                token.role.to_string(),
                relative_time(now_unix_s, token.created_at_unix_s),
                token.created_by.clone(),
                token
                    .revoked_at_unix_s
                    .map(|revoked| relative_time(now_unix_s, revoked))
                    .unwrap_or_else(|| "-".to_owned()),
            ]
        })
        .collect();
    render_table(&["NAME", "ROLE", "CREATED", "CREATED BY", "REVOKED"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;

    #[test]
    fn token_table_marks_revoked_tokens() {
        let tokens = vec![
            TokenInfo {
                name: "admin".into(),
                role: Role::Admin,
                created_at_unix_s: 1_000,
                created_by: "server".into(),
                revoked_at_unix_s: None,
            },
            TokenInfo {
                name: "ci".into(),
                role: Role::Viewer,
                created_at_unix_s: 4_600,
                created_by: "token:admin/admin".into(),
                revoked_at_unix_s: Some(8_200),
            },
        ];
        let table = token_table(&tokens, 8_200 + 120);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        assert!(lines[0].starts_with("NAME"), "{table}");
        assert!(
            lines[1].contains("admin") && lines[1].ends_with('-'),
            "{table}"
        );
        assert!(
            lines[2].contains("viewer") && lines[2].ends_with("2m ago"),
            "{table}"
        );
    }
}
