pub mod redaction;
