"""imprint: self-hosted IoT device provisioning and certificate authority."""

__version__ = "0.1.0"
