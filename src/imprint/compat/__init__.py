"""Wire formats of other provisioning systems, translated to and from imprint's own."""
