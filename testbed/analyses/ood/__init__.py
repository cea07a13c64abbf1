"""The headline analysis: final error on the OOD splits and on train, per method label and task."""
