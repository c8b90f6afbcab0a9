//! Studies: placeholder replaced below.
