//! Unit tests of the parts that need no RDMA device: formats, choices, the protocol's
//! bookkeeping. The data path is tested for real inside a SoftRoCE VM (tests/verbs.rs).
