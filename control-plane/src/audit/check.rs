//! Checking a stored log the way a reviewer checks an export, without writing the export.
//!
//! The events are streamed from storage, in order, followed by the stored latest checkpoint,
//! through [`loupe_audit::verify::verify_export`] — the reviewer's own offline verification,
//! so there is one definition of "this log verifies": the chain of `prev` hashes, dense
//! sequence numbers, every event covered by the signed checkpoint, and, given a checkpoint
//! the reviewer kept from earlier, no rollback and no split view against it. Used after a
//! restore from backup (`loupe-control-plane verify`) and by the SQLite → PostgreSQL
//! migration on the copy it is about to commit.
//!
//! The verification runs on a thread of its own reading from a bounded channel, so a log of
//! any size is checked in constant memory (the storage side pushes pages; the verifier pulls
//! lines).

use std::io::{BufReader, Read, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use loupe_audit::checkpoint::NoteVerifier;
use loupe_audit::export::ExportWriter;
use loupe_audit::verify::{Verified, VerifyError, verify_export};

use super::store::{AuditReader, StoreError};

/// Bytes sent to the verifier at a time.
const CHUNK: usize = 64 * 1024;
/// Chunks in flight between storage and the verifier.
const CHUNKS_IN_FLIGHT: usize = 4;

/// Why a stored log does not check out.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckError {
    /// The log could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The log was read, and it does not verify.
    #[error("the stored log does not verify: {0}")]
    Verify(#[from] VerifyError),
}

/// Feeds an export into the verifier: the storage side writes event lines through it.
pub type ExportFeed = ExportWriter<ChunkWriter>;

/// Verifies the export that `feed` writes (every event, in order) followed by the checkpoint
/// note `feed` returns, with `key` and against `kept` (a note the reviewer kept), if given.
///
/// `feed` is told to stop (its writes fail) once verification has failed; the verification's
/// error is then the one returned.
pub fn verify_feed(
    key: &NoteVerifier,
    kept: Option<&str>,
    feed: impl FnOnce(&mut ExportFeed) -> Result<String, StoreError>,
) -> Result<Verified, CheckError> {
    let (sender, receiver) = sync_channel(CHUNKS_IN_FLIGHT);
    std::thread::scope(|scope| {
        let verifier = scope
            .spawn(move || verify_export(BufReader::new(ChunkReader::new(receiver)), key, kept));
        let mut export = ExportWriter::new(ChunkWriter::new(sender));
        let fed = feed(&mut export).and_then(|note| {
            export
                .finish(&note)
                .map(drop)
                .map_err(|e| StoreError::Other(format!("verification stopped reading: {e}")))
        });
        // The verifier ends once the feed's sender is gone (dropped with the export above).
        let verified = verifier
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the verifier stopped").into()));
        match (verified, fed) {
            (Err(error), _) => Err(CheckError::Verify(error)),
            (Ok(_), Err(error)) => Err(CheckError::Store(error)),
            (Ok(verified), Ok(())) => Ok(verified),
        }
    })
}

/// Verifies everything `reader` holds against its latest checkpoint and `kept`. Give it a
/// snapshot reader (see [`super::ReaderSource::open_snapshot`]) where others may be writing.
pub fn verify_stored(
    reader: &mut dyn AuditReader,
    key: &NoteVerifier,
    kept: Option<&str>,
) -> Result<Verified, CheckError> {
    let (_, note) = reader
        .latest_checkpoint()?
        .ok_or(CheckError::Verify(VerifyError::NoCheckpoint))?;
    verify_feed(key, kept, |export| {
        let mut written = Ok(());
        reader.visit(0, &mut |event| {
            written = export.event(event.line);
            written.is_ok()
        })?;
        written.map_err(|e| StoreError::Other(format!("verification stopped reading: {e}")))?;
        Ok(note)
    })
}

/// The writing end of the channel to the verifier: buffers a chunk, then sends it.
pub struct ChunkWriter {
    sender: SyncSender<Vec<u8>>,
    buffer: Vec<u8>,
}

impl ChunkWriter {
    fn new(sender: SyncSender<Vec<u8>>) -> Self {
        Self {
            sender,
            buffer: Vec::with_capacity(CHUNK),
        }
    }

    fn send(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buffer, Vec::with_capacity(CHUNK));
        self.sender.send(chunk).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the verifier has stopped")
        })
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= CHUNK {
            self.send()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// The reading end: the chunks in order, then end of file once the writer is gone.
struct ChunkReader {
    receiver: Receiver<Vec<u8>>,
    chunk: Vec<u8>,
    at: usize,
}

impl ChunkReader {
    fn new(receiver: Receiver<Vec<u8>>) -> Self {
        Self {
            receiver,
            chunk: Vec::new(),
            at: 0,
        }
    }
}

impl Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.chunk.len() {
            match self.receiver.recv() {
                Ok(chunk) => {
                    self.chunk = chunk;
                    self.at = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.chunk.len() - self.at);
        out[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}
