#include <stdio.h>
int main(void)
{
	fputs("skiff: not built yet\n", stderr);
	return 1;
}
