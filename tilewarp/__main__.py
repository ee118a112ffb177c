from tilewarp.runtime.cli import main

raise SystemExit(main())
