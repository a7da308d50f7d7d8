"""What several test modules share: servers on loopback, the ConfigMap watch, the CLI
process, hypothesis strategies. Test modules import from here, never from each other."""
