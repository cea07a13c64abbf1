"""Analysis of histories: OOD metrics and attribution, plateaus, localization."""
