"""The networks and their learning rules: BP, FA, DFA, IFA and the later rules, fully connected and conv."""
