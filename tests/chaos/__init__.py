"""The chaos suite (#17): each row of the hardening probes as a test, run by make test."""
