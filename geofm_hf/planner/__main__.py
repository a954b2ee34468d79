from geofm_hf.planner.cli import main

raise SystemExit(main())
