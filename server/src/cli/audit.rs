//! `tidegate audit`: verify the server's audit log and export it as JSON lines, read through the
//! API or, with `--db`, straight from a store file (read-only, so it also works on a copy).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use super::client::ApiClient;
use super::CliError;
use crate::audit::{self, AuditError, AuditPage, AuditRecord, AUDIT_PATH, MAX_PAGE_LIMIT};

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain and name every edited, deleted or reordered entry; exits with 1 when
    /// the log is not intact
    Verify(VerifyArgs),
    /// Write entries as JSON lines, oldest first
    Export(ExportArgs),
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Read this store file instead of asking the server
    #[arg(long, value_name = "PATH")]
    pub db: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Read this store file instead of asking the server
    #[arg(long, value_name = "PATH")]
    pub db: Option<PathBuf>,
    /// Export only entries with a sequence number above this one
    #[arg(long, value_name = "SEQ", default_value_t = 0)]
    pub after: u64,
    /// Write to this file instead of stdout
    #[arg(long, value_name = "PATH")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum AuditCommandError {
    #[error(transparent)]
    Read(#[from] AuditError),
    #[error("the audit log is not intact: {count} problems found (listed above)")]
    NotIntact { count: usize },
    #[error("cannot write {path}: {source}")]
    WriteFile {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub fn run(command: AuditCommand, client: &ApiClient, out: &mut dyn Write) -> Result<(), CliError> {
    match command {
        AuditCommand::Verify(args) => {
            let records = read_records(args.db.as_deref(), client, 0)?;
            verify(&records, out)
        }
        AuditCommand::Export(args) => {
            let records = read_records(args.db.as_deref(), client, args.after)?;
            match &args.out {
                Some(path) => export_to_file(&records, path),
                None => write_lines(&records, out).map_err(CliError::from),
            }
        }
    }
}

/// Reads the entries after `after` from the file, or else page by page from the server.
fn read_records(
    db: Option<&Path>,
    client: &ApiClient,
    after: u64,
) -> Result<Vec<AuditRecord>, CliError> {
    if let Some(path) = db {
        let mut records = audit::read_file(path).map_err(AuditCommandError::from)?;
        records.retain(|record| record.seq > after);
        return Ok(records);
    }
    let mut records = Vec::new();
    let mut cursor = after;
    loop {
        let page: AuditPage = client.get_json(&format!(
            "{AUDIT_PATH}?after={cursor}&limit={MAX_PAGE_LIMIT}"
        ))?;
        let Some(last) = page.last() else {
            break;
        };
        // The server returns entries above the cursor in order; a page that does not move the
        // cursor forward would repeat for ever.
        if last.seq <= cursor {
            break;
        }
        cursor = last.seq;
        let full = page.len() == MAX_PAGE_LIMIT;
        records.extend(page);
        if !full {
            break;
        }
    }
    Ok(records)
}

fn verify(records: &[AuditRecord], out: &mut dyn Write) -> Result<(), CliError> {
    let report = audit::verify(records);
    for problem in &report.problems {
        writeln!(out, "{problem}")?;
    }
    if !report.is_intact() {
        return Err(AuditCommandError::NotIntact {
            count: report.problems.len(),
        }
        .into());
    }
    match &report.head {
        Some((seq, hash)) => writeln!(
            out,
            "audit log intact: {} entries; the newest is entry {seq} with hash {hash}",
            report.entries
        )?,
        None => writeln!(out, "audit log intact: it has no entries yet")?,
    }
    Ok(())
}

fn export_to_file(records: &[AuditRecord], path: &Path) -> Result<(), CliError> {
    let write_error = |source| AuditCommandError::WriteFile {
        path: path.to_owned(),
        source,
    };
    let file = File::create(path).map_err(write_error)?;
    let mut writer = BufWriter::new(file);
    write_lines(records, &mut writer).map_err(write_error)?;
    writer
        .into_inner()
        .map_err(|error| write_error(error.into_error()))?
        .sync_all()
        .map_err(write_error)?;
    Ok(())
}

fn write_lines(records: &[AuditRecord], out: &mut dyn Write) -> std::io::Result<()> {
    for record in records {
        let line = serde_json::to_string(record).expect("an audit record encodes as JSON");
        writeln!(out, "{line}")?;
    }
    Ok(())
}
