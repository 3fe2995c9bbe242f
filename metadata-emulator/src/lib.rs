//! A local stand-in for the GCE metadata server.
