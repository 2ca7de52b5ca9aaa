"""dfa-cli: reproduce, extend and stress-test Nøkland (2016), Direct Feedback Alignment."""
__version__ = "0.1.0"
