DROP TABLE IF EXISTS discarded_dead_letters;
