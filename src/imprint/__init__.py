"""imprint: self-hosted IoT device provisioning."""
