"""Everything that knows IBL: ONE access, ALF loading, QC, regions and behaviour. No torch here."""
