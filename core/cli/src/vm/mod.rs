//! The VM: QEMU command line, acceleration, transports, batch and memres lifecycle.
