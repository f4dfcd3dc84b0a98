DROP TABLE IF EXISTS admin_actions;
