import CFault

func cfaultSetParentDeathSignal() -> Int32 { cfault_set_parent_death_signal(9) }
