"""The analysis stage: do attention internals announce a rule violation before it happens?"""
