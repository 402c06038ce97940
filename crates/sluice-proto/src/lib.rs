//! Generated Rust types for sluice's public wire formats. `proto/` is the single
//! source of truth: gRPC services and NATS payloads alike are defined there and
//! only there.

pub mod codec;

/// `sluice.dispatcher.*`
pub mod dispatcher {
    /// `sluice.dispatcher.v1`: the dispatcher's gRPC API.
    #[allow(unreachable_pub, clippy::all, missing_docs)]
    pub mod v1 {
        tonic::include_proto!("sluice.dispatcher.v1");
    }
}

/// `sluice.cluster.*`
pub mod cluster {
    /// `sluice.cluster.v1`: what dispatcher replicas say to each other over NATS.
    #[allow(unreachable_pub, clippy::all, missing_docs)]
    pub mod v1 {
        tonic::include_proto!("sluice.cluster.v1");
    }
}

/// `sluice.md.*`
pub mod md {
    /// `sluice.md.v1`: normalized market data the collector publishes on NATS.
    #[allow(unreachable_pub, clippy::all, missing_docs)]
    pub mod v1 {
        tonic::include_proto!("sluice.md.v1");
    }
}

/// `sluice.account.*`
pub mod account {
    /// `sluice.account.v1`: an account's orders, fills and balances from the
    /// exchanges' private streams, as the collector publishes them on NATS.
    #[allow(unreachable_pub, clippy::all, missing_docs)]
    pub mod v1 {
        tonic::include_proto!("sluice.account.v1");
    }
}

/// `sluice.signal.*`
pub mod signal {
    /// `sluice.signal.v1`: trading signals the signal service publishes on NATS.
    #[allow(unreachable_pub, clippy::all, missing_docs)]
    pub mod v1 {
        tonic::include_proto!("sluice.signal.v1");
    }
}

/// `sluice.execution.*`
pub mod execution {
    /// `sluice.execution.v1`: the execution service's gRPC API, its NATS events
    /// and its order journal.
    #[allow(unreachable_pub, clippy::all, missing_docs)]
    pub mod v1 {
        tonic::include_proto!("sluice.execution.v1");
    }
}

/// `sluice.ops.*`
pub mod ops {
    /// `sluice.ops.v1`: every service's heartbeat on NATS, with its figures.
    #[allow(unreachable_pub, clippy::all, missing_docs)]
    pub mod v1 {
        tonic::include_proto!("sluice.ops.v1");
    }
}

/// `sluice.alert.*`
pub mod alert {
    /// `sluice.alert.v1`: the alerting service's gRPC API, its alerts on NATS and
    /// its notification log.
    #[allow(unreachable_pub, clippy::all, missing_docs)]
    pub mod v1 {
        tonic::include_proto!("sluice.alert.v1");
    }
}

/// Encoded `FileDescriptorSet` of every sluice proto, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/sluice_descriptor.bin"));

pub use prost_types;

#[cfg(test)]
mod tests {
    use prost::Message;

    #[test]
    fn descriptor_set_names_the_dispatcher_service() {
        let fds = prost_types::FileDescriptorSet::decode(super::FILE_DESCRIPTOR_SET).unwrap();
        let file = fds.file.iter().find(|f| f.package() == "sluice.dispatcher.v1").unwrap();
        assert_eq!(file.service[0].name(), "Dispatcher");
    }
}
