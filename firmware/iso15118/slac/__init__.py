"""ISO 15118-3 SLAC, EVSE side, over HomePlug Green PHY (QCA7000-class modems): codec, machine, raw link."""
