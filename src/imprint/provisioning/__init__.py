"""Device provisioning: enrollments, attestation results, and the one provisioning use case."""
