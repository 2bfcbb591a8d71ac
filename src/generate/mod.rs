//! Pure generators: the index and one proxy in, Envoy resources out.
