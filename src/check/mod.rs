//! Checks at end of data (and at the earlier stages a check may answer):
//! the milter client. [`milter`] is the sans-IO protocol; it decides
//! nothing for the SMTP client and touches no socket or file: the runtime
//! drives it, and the session turns its answers into replies.

pub mod milter;
