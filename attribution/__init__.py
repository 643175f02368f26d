"""The pure attribution core: identity, journeys, models, money and refunds.

Nothing here does I/O or reads a clock: state and time come in as arguments,
so every rule of contract sections 4 and 5 is testable without a broker.
"""
