from causeway.cli import main

raise SystemExit(main())
